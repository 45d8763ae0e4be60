"""Neurons with closed-form continuous-time solutions, for the heyoka ODE target, beside their
forward-Euler references for every other target. The input is held constant over each step of
length dt (zero-order hold), the state starts at zero.

- I:      v' = r x                           -> v(t + dt) = v + dt r x (Euler is exact here)
- LI:     tau v' = v_leak - v + r x  -> v(t + dt) = a + (v - a) e^(-dt/tau), a = v_leak + r x
- CubaLI: tau_syn i' = w_in x - i, tau_mem v' = v_leak - v + r i: i and v from the two exponentials
- LIF:    constant drive a = r x > threshold, v_leak = v_reset = 0: spikes at k t*,
          t* = tau ln(a / (a - threshold)); the output of a step is its number of spikes.
- IF:     constant drive, reset 0: spikes at k threshold / (r x).
- CubaLIF: constant drive, reset 0: v(t) from the two exponentials between spikes (the current
          i is not reset), each spike time found by bisection on that closed form.
- a linear path (Flatten, Scale, Affine, Linear) into an LI: its drive is the path's value.
"""
import numpy as np

import polyir as P
from golden import case, golden

DT = 1e-3
T, B, N = 30, 2, 3
EULER = dict(rtol=1e-9, atol=1e-12)
ODE_TOL = (1e-8, 1e-10)


def neuron_graph(node):
    return P.Graph.sequential(node, input_shape=(N,), metadata={"dt": DT})


def li_steps(drive, tau, r, leak):
    """LI membrane per step under a (T, B, n) drive: (forward Euler, exact) sequences."""
    euler = exact = np.zeros(drive.shape[1:])
    ys_euler, ys_exact = [], []
    for d in drive:
        euler = euler + DT / tau * (leak - euler + r * d)
        a = leak + r * d
        exact = a + (exact - a) * np.exp(-DT / tau)
        ys_euler.append(euler)
        ys_exact.append(exact)
    return np.stack(ys_euler), np.stack(ys_exact)


@golden
def ode_i(rng):
    r = rng.uniform(50, 150, N)
    x = rng.normal(1.0, 1.0, size=(T, B, N))
    v = np.cumsum(DT * r * x, axis=0)
    case("ode_i", neuron_graph(P.I(r)), x, v, **EULER, ode=(v, *ODE_TOL))


@golden
def ode_li(rng):
    tau, r, leak = rng.uniform(4e-3, 2e-2, N), rng.uniform(0.5, 2, N), rng.normal(0, 0.3, N)
    x = rng.normal(1.0, 1.0, size=(T, B, N))
    euler, exact = li_steps(x, tau, r, leak)
    case("ode_li", neuron_graph(P.LI(tau, r, leak)), x, euler, **EULER, ode=(exact, *ODE_TOL))


@golden
def ode_cubali(rng):
    ts, tm = rng.uniform(2e-3, 4e-3, N), rng.uniform(6e-3, 2e-2, N)
    r, leak, w_in = rng.uniform(0.5, 2, N), rng.normal(0, 0.2, N), rng.uniform(0.5, 2, N)
    x = rng.normal(1.0, 1.0, size=(T, B, N))
    i_e, v_e, i_x, v_x = (np.zeros((B, N)) for _ in range(4))
    ys_euler, ys_exact = [], []
    for t in range(T):
        i_e = i_e + DT / ts * (-i_e + w_in * x[t])
        v_e = v_e + DT / tm * (leak - v_e + r * i_e)
        ys_euler.append(v_e)
        i_inf = w_in * x[t]
        c = i_x - i_inf
        k = r * c * ts / (ts - tm)  # the particular solution's e^(-t/tau_syn) term
        v_inf = leak + r * i_inf
        v_x = v_inf + k * np.exp(-DT / ts) + (v_x - v_inf - k) * np.exp(-DT / tm)
        i_x = i_inf + c * np.exp(-DT / ts)
        ys_exact.append(v_x)
    case("ode_cubali", neuron_graph(P.CubaLI(ts, tm, r, leak, w_in)), x, np.stack(ys_euler),
         **EULER, ode=(np.stack(ys_exact), *ODE_TOL))


@golden
def ode_lif_constant_drive(rng):
    tau, r = np.array([5e-3, 8e-3, 1.2e-2]), np.array([1.0, 1.5, 2.0])
    thr, zeros = np.ones(N), np.zeros(N)
    x = np.broadcast_to(np.array([[2.5, 1.9, 1.3], [4.0, 3.1, 0.4]]), (T, B, N)).copy()
    euler, ys_euler = np.zeros((B, N)), []
    for t in range(T):
        euler = euler + DT / tau * (-euler + r * x[t])
        z = euler > thr
        euler = np.where(z, 0.0, euler)
        ys_euler.append(z.astype(np.float64))
    a = r * x[0]
    period = np.where(a > thr, tau * np.log(a / np.maximum(a - thr, 1e-300)), np.inf)
    spikes_by = np.floor(np.arange(1, T + 1)[:, None, None] * DT / period)  # spikes up to t
    counts = np.diff(np.concatenate([np.zeros((1, B, N)), spikes_by]), axis=0)
    edges = (np.arange(1, T + 1)[:, None, None] * DT / period)[:, np.isfinite(period)]
    assert np.all(np.abs(edges - np.round(edges)) > 1e-6), "a spike too close to a step edge"
    assert counts.sum() > 0 and (counts == 0).any()
    case("ode_lif_constant_drive", neuron_graph(P.LIF(tau, r, zeros, thr, zeros)), x,
         np.stack(ys_euler), **EULER, ode=(counts, 0.0, 0.0))


def _spike_counts(first_spike, period_state, steps):
    """Per step counts of spikes at times from `first_spike(state) -> (t, state)` (None: no
    more spikes), steps of DT."""
    counts = np.zeros(steps)
    t, state = 0.0, period_state
    while True:
        nxt = first_spike(state)
        if nxt is None:
            return counts
        dt_spike, state = nxt
        t += dt_spike
        if t >= steps * DT:
            return counts
        step = t / DT
        assert abs(step - round(step)) > 1e-6, "a spike too close to a step edge"
        counts[int(np.floor(step))] += 1


@golden
def ode_if_constant_drive(rng):
    r, thr = np.array([100.0, 150.0, 300.0]), np.ones(N)
    x = np.broadcast_to(np.array([[2.3, 1.7, 0.9], [3.1, 0.3, 1.3]]), (T, B, N)).copy()
    euler, ys = np.zeros((B, N)), []
    for t in range(T):
        euler = euler + DT * r * x[t]
        z = euler > thr
        euler = np.where(z, 0.0, euler)
        ys.append(z.astype(np.float64))
    counts = np.zeros((T, B, N))
    for bb in range(B):
        for n in range(N):
            period = thr[n] / (r[n] * x[0, bb, n])
            counts[:, bb, n] = _spike_counts(lambda s: (period, s), None, T)
    assert counts.sum() > 0
    case("ode_if_constant_drive", neuron_graph(P.IF(r, thr, np.zeros(N))), x, np.stack(ys),
         **EULER, ode=(counts, 0.0, 0.0))


@golden
def ode_cubalif_constant_drive(rng):
    ts, tm = np.array([2e-3, 3e-3, 2.5e-3]), np.array([6e-3, 1e-2, 8e-3])
    r, w_in, thr, zeros = np.array([2.0, 3.0, 2.5]), np.ones(N), np.ones(N), np.zeros(N)
    x = np.broadcast_to(np.array([[1.2, 0.9, 0.7], [0.45, 1.5, 1.1]]), (T, B, N)).copy()
    i_e, v_e, ys = np.zeros((B, N)), np.zeros((B, N)), []
    for t in range(T):
        i_e = i_e + DT / ts * (-i_e + w_in * x[t])
        v_e = v_e + DT / tm * (-v_e + r * i_e)
        z = v_e > thr
        v_e = np.where(z, 0.0, v_e)
        ys.append(z.astype(np.float64))
    counts = np.zeros((T, B, N))
    for bb in range(B):
        for n in range(N):
            i_inf = w_in[n] * x[0, bb, n]

            def v_at(s, i0, v0, n=n, i_inf=i_inf):
                c = i0 - i_inf
                k = r[n] * c * ts[n] / (ts[n] - tm[n])
                return (r[n] * i_inf + k * np.exp(-s / ts[n])
                        + (v0 - r[n] * i_inf - k) * np.exp(-s / tm[n]))

            def first_spike(state, n=n, i_inf=i_inf, v_at=v_at):
                i0, v0 = state
                grid = np.linspace(0, T * DT, 20001)[1:]
                above = np.nonzero(v_at(grid, i0, v0) > thr[n])[0]
                if not above.size:
                    return None
                lo, hi = (grid[above[0] - 1] if above[0] else 0.0), grid[above[0]]
                for _ in range(80):
                    mid = 0.5 * (lo + hi)
                    lo, hi = (mid, hi) if v_at(mid, i0, v0) <= thr[n] else (lo, mid)
                s = hi
                return s, (i_inf + (i0 - i_inf) * np.exp(-s / ts[n]), 0.0)

            counts[:, bb, n] = _spike_counts(first_spike, (0.0, 0.0), T)
    assert counts.sum() > 0 and (counts.sum(0) == 0).any()
    case("ode_cubalif_constant_drive",
         neuron_graph(P.CubaLIF(ts, tm, r, zeros, thr, zeros, w_in)), x, np.stack(ys), **EULER,
         ode=(counts, 0.0, 0.0))


@golden
def ode_linear_path_into_li(rng):
    s = rng.uniform(0.5, 1.5, (2, 2))
    w, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    w2 = rng.normal(size=(2, 3))
    tau, r, leak = np.array([5e-3, 1e-2]), np.array([1.0, 2.0]), np.zeros(2)
    g = P.Graph(metadata={"dt": DT})
    g.add("x", P.Input((2, 2)))
    g.add("scale", P.Scale(s))
    g.add("flat", P.Flatten(start_dim=0))
    g.add("fc", P.Affine(w, b))
    g.add("proj", P.Linear(w2))
    g.add("li", P.LI(tau, r, leak))
    g.add("y", P.Output((2,)))
    for e in [("x", "scale"), ("scale", "flat"), ("flat", "fc"), ("fc", "proj"), ("proj", "li"),
              ("li", "y")]:
        g.connect(*e)
    x = rng.normal(size=(T, B, 2, 2))
    drive = ((x * s).reshape(T, B, 4) @ w.T + b) @ w2.T
    euler, exact = li_steps(drive, tau, r, leak)
    case("ode_linear_path_into_li", g, x, euler, **EULER, ode=(exact, *ODE_TOL))
