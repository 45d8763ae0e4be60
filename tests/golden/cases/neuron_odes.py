"""Neurons with closed-form continuous-time solutions, for the heyoka ODE target, beside their
forward-Euler references for every other target. The input is held constant over each step of
length dt (zero-order hold), the state starts at zero.

- I:      v' = r x                           -> v(t + dt) = v + dt r x (Euler is exact here)
- LI:     tau v' = v_leak - v + r x          -> v(t + dt) = a + (v - a) e^(-dt/tau), a = v_leak + r x
- CubaLI: tau_syn i' = w_in x - i, tau_mem v' = v_leak - v + r i: i and v from the two exponentials
- LIF:    constant drive a = r x > threshold, v_leak = v_reset = 0: spikes at k t*,
          t* = tau ln(a / (a - threshold)); the output of a step is its number of spikes.
"""
import numpy as np

import polyir as P
from golden import case, golden

DT = 1e-3
T, B, N = 30, 2, 3
EULER = dict(rtol=1e-9, atol=1e-12)
ODE_TOL = (1e-8, 1e-10)


def neuron_graph(node, n=N):
    g = P.Graph(metadata={"dt": DT})
    g.add("x", P.Input((n,)))
    g.add("neuron", node)
    g.add("y", P.Output((n,)))
    g.connect("x", "neuron")
    g.connect("neuron", "y")
    return g


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
    euler, exact = np.zeros((B, N)), np.zeros((B, N))
    ys_euler, ys_exact = [], []
    for t in range(T):
        euler = euler + DT / tau * (leak - euler + r * x[t])
        a = leak + r * x[t]
        exact = a + (exact - a) * np.exp(-DT / tau)
        ys_euler.append(euler)
        ys_exact.append(exact)
    case("ode_li", neuron_graph(P.LI(tau, r, leak)), x, np.stack(ys_euler), **EULER,
         ode=(np.stack(ys_exact), *ODE_TOL))


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
