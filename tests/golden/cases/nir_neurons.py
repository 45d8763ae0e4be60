"""Leaky-integrator neurons (I, IF, LI, LIF, CubaLI, CubaLIF), Delay and recurrent nets, against
numpy loops at the graph's metadata dt: forward Euler (NIR's reference discretisation) and, with
metadata discretization="exact", the closed-form solution over each step (input held); the
spiking kinds' extension fields (reset by subtraction, delayed reset as snnTorch's default Leaky,
several spikes per step as sinabs' MultiSpike, the >= threshold test); a recurrent Affine's bias
acting from the first step.

Graphs are float64 so that spike decisions cannot flip on rounding. Inputs are (T, batch, n)
sequences; the state starts at zero.
"""
import numpy as np

import polyir as P
from golden import case, golden

DT = 1e-3
TOL = dict(rtol=1e-9, atol=1e-12)
T, B, N = 40, 3, 4


def neuron_graph(node, n=N, dt=DT, discretization=None):
    g = P.Graph(metadata={"dt": dt} if discretization is None else
                {"dt": dt, "discretization": discretization})
    g.add("x", P.Input((n,)))
    g.add("neuron", node)
    g.add("y", P.Output((n,)))
    g.connect("x", "neuron")
    g.connect("neuron", "y")
    return g


def drive(rng, mean=1.5):
    return rng.normal(mean, 1.0, size=(T, B, N))


def full(v):
    return np.full(N, v, np.float64)


@golden
def neuron_i(rng):
    r = rng.uniform(50, 150, N)
    x = drive(rng)
    v, out = np.zeros((B, N)), []
    for t in range(T):
        v = v + DT * r * x[t]
        out.append(v)
    case("neuron_i", neuron_graph(P.I(r)), x, np.stack(out), **TOL)


@golden
def neuron_if(rng):
    r, thr, reset = rng.uniform(200, 400, N), full(1.0), rng.uniform(-0.2, 0.2, N)
    x = drive(rng)
    v, out = np.zeros((B, N)), []
    for t in range(T):
        v = v + DT * r * x[t]
        z = v > thr
        v = np.where(z, reset, v)
        out.append(z.astype(np.float64))
    y = np.stack(out)
    assert 0 < y.sum() < y.size
    case("neuron_if", neuron_graph(P.IF(r, thr, reset)), x, y, **TOL)


@golden
def neuron_li(rng):
    tau, r, leak = rng.uniform(4e-3, 2e-2, N), rng.uniform(0.5, 2, N), rng.normal(0, 0.3, N)
    x = drive(rng)
    v, out = np.zeros((B, N)), []
    for t in range(T):
        v = v + DT / tau * (leak - v + r * x[t])
        out.append(v)
    case("neuron_li", neuron_graph(P.LI(tau, r, leak)), x, np.stack(out), **TOL)


@golden
def neuron_lif(rng):
    tau, r, leak = rng.uniform(3e-3, 1e-2, N), rng.uniform(1, 3, N), rng.normal(0, 0.2, N)
    thr, reset = full(1.0), rng.uniform(-0.3, 0.1, N)
    x = drive(rng)
    v, out = np.zeros((B, N)), []
    for t in range(T):
        v = v + DT / tau * (leak - v + r * x[t])
        z = v > thr
        v = np.where(z, reset, v)
        out.append(z.astype(np.float64))
    y = np.stack(out)
    assert 0 < y.sum() < y.size
    case("neuron_lif", neuron_graph(P.LIF(tau, r, leak, thr, reset)), x, y, **TOL)


@golden
def neuron_cubali(rng):
    ts, tm = rng.uniform(2e-3, 5e-3, N), rng.uniform(5e-3, 2e-2, N)
    r, leak, w_in = rng.uniform(0.5, 2, N), rng.normal(0, 0.2, N), rng.uniform(0.5, 2, N)
    x = drive(rng)
    i, v, out = np.zeros((B, N)), np.zeros((B, N)), []
    for t in range(T):
        i = i + DT / ts * (-i + w_in * x[t])  # synaptic current first,
        v = v + DT / tm * (leak - v + r * i)  # then the membrane from the new current
        out.append(v)
    case("neuron_cubali", neuron_graph(P.CubaLI(ts, tm, r, leak, w_in)), x, np.stack(out), **TOL)


@golden
def neuron_cubalif(rng):
    ts, tm = rng.uniform(2e-3, 5e-3, N), rng.uniform(3e-3, 1e-2, N)
    r, leak, w_in = rng.uniform(1, 3, N), rng.normal(0, 0.2, N), rng.uniform(1, 2, N)
    thr, reset = full(1.0), rng.uniform(-0.2, 0.0, N)
    x = drive(rng)
    i, v, out = np.zeros((B, N)), np.zeros((B, N)), []
    for t in range(T):
        i = i + DT / ts * (-i + w_in * x[t])
        v = v + DT / tm * (leak - v + r * i)
        z = v > thr
        v = np.where(z, reset, v)
        out.append(z.astype(np.float64))
    y = np.stack(out)
    assert 0 < y.sum() < y.size
    case("neuron_cubalif", neuron_graph(P.CubaLIF(ts, tm, r, leak, thr, reset, w_in)), x, y, **TOL)


@golden
def delay_whole_steps(rng):
    steps = np.array([0, 1, 3, 5])
    x = drive(rng)
    y = np.zeros_like(x)
    for j, d in enumerate(steps):
        y[d:, :, j] = x[:T - d, :, j]
    case("delay_whole_steps", neuron_graph(P.Delay(steps * DT)), x, y, **TOL)


@golden
def recurrent_cubalif_net(rng):
    n_in, n_hid, n_out = 3, 6, 2
    w1, b1 = rng.normal(0, 1.5, (n_hid, n_in)), rng.normal(0.5, 0.2, n_hid)
    wr = rng.normal(0, 0.5, (n_hid, n_hid))
    wo = rng.normal(0, 1, (n_out, n_hid))
    ts, tm = np.full(n_hid, 3e-3), np.full(n_hid, 6e-3)
    r, leak, thr, w_in = np.full(n_hid, 2.0), np.zeros(n_hid), np.ones(n_hid), np.ones(n_hid)
    tau_o, r_o, leak_o = np.full(n_out, 1e-2), np.ones(n_out), np.zeros(n_out)
    g = P.Graph(metadata={"dt": DT})
    g.add("x", P.Input((n_in,)))
    g.add("fc", P.Affine(w1, b1))
    g.add("lif", P.CubaLIF(ts, tm, r, leak, thr, np.zeros(n_hid), w_in))
    g.add("rec", P.Linear(wr))
    g.add("readout", P.Linear(wo))
    g.add("li", P.LI(tau_o, r_o, leak_o))
    g.add("y", P.Output((n_out,)))
    for e in [("x", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "readout"),
              ("readout", "li"), ("li", "y")]:
        g.connect(*e)
    x = rng.normal(0.5, 1.0, size=(T, B, n_in))
    i, v, z = np.zeros((B, n_hid)), np.zeros((B, n_hid)), np.zeros((B, n_hid))
    vo, out, spikes = np.zeros((B, n_out)), [], 0
    for t in range(T):
        h = x[t] @ w1.T + b1 + z @ wr.T  # the recurrent edge reads the previous step's spikes
        i = i + DT / ts * (-i + w_in * h)
        v = v + DT / tm * (leak - v + r * i)
        z = (v > thr).astype(np.float64)
        v = np.where(z > 0, 0.0, v)
        spikes += z.sum()
        vo = vo + DT / tau_o * (leak_o - vo + r_o * (z @ wo.T))
        out.append(vo)
    assert spikes > 0
    case("recurrent_cubalif_net", g, x, np.stack(out), **TOL)


# --- the exact discretization: closed-form solutions over one step, input held ----------------

@golden
def neuron_li_exact(rng):
    tau, r, leak = rng.uniform(4e-3, 2e-2, N), rng.uniform(0.5, 2, N), rng.normal(0, 0.3, N)
    x = drive(rng)
    e = np.exp(-DT / tau)
    v, out = np.zeros((B, N)), []
    for t in range(T):
        target = leak + r * x[t]  # where v relaxes to while x[t] is held
        v = target + (v - target) * e
        out.append(v)
    case("neuron_li_exact", neuron_graph(P.LI(tau, r, leak), discretization="exact"), x,
         np.stack(out), **TOL)


@golden
def neuron_lif_exact(rng):
    tau, r, leak = rng.uniform(3e-3, 1e-2, N), rng.uniform(1, 3, N), rng.normal(0, 0.2, N)
    thr, reset = full(1.0), rng.uniform(-0.3, 0.1, N)
    x = drive(rng)
    e = np.exp(-DT / tau)
    v, out = np.zeros((B, N)), []
    for t in range(T):
        target = leak + r * x[t]
        v = target + (v - target) * e
        z = v > thr
        v = np.where(z, reset, v)
        out.append(z.astype(np.float64))
    y = np.stack(out)
    assert 0 < y.sum() < y.size
    case("neuron_lif_exact", neuron_graph(P.LIF(tau, r, leak, thr, reset),
                                          discretization="exact"), x, y, **TOL)


def cuba_exact(i, v, x, ts, tm, r, leak, w_in):
    """tau_syn di/dt = -i + w_in x, tau_mem dv/dt = leak - v + r i over DT, x held: with
    j = i - w_in x and u = v - leak - r w_in x, j decays with tau_syn and
    u(DT) = (u - A) exp(-DT/tau_mem) + A exp(-DT/tau_syn), A = r j tau_syn / (tau_syn - tau_mem)."""
    es, em = np.exp(-DT / ts), np.exp(-DT / tm)
    j = i - w_in * x
    u = v - leak - r * w_in * x
    a = r * j * ts / (ts - tm)
    return w_in * x + j * es, leak + r * w_in * x + (u - a) * em + a * es


@golden
def neuron_cubali_exact(rng):
    ts, tm = rng.uniform(2e-3, 4e-3, N), rng.uniform(6e-3, 2e-2, N)
    r, leak, w_in = rng.uniform(0.5, 2, N), rng.normal(0, 0.2, N), rng.uniform(0.5, 2, N)
    x = drive(rng)
    i, v, out = np.zeros((B, N)), np.zeros((B, N)), []
    for t in range(T):
        i, v = cuba_exact(i, v, x[t], ts, tm, r, leak, w_in)
        out.append(v)
    case("neuron_cubali_exact", neuron_graph(P.CubaLI(ts, tm, r, leak, w_in),
                                             discretization="exact"), x, np.stack(out), **TOL)


@golden
def neuron_cubalif_exact(rng):
    ts, tm = rng.uniform(2e-3, 4e-3, N), rng.uniform(5e-3, 1e-2, N)
    r, leak, w_in = rng.uniform(1, 3, N), rng.normal(0, 0.2, N), rng.uniform(1, 2, N)
    thr, reset = full(1.0), rng.uniform(-0.2, 0.0, N)
    x = drive(rng)
    i, v, out = np.zeros((B, N)), np.zeros((B, N)), []
    for t in range(T):
        i, v = cuba_exact(i, v, x[t], ts, tm, r, leak, w_in)
        z = v > thr
        v = np.where(z, reset, v)
        out.append(z.astype(np.float64))
    y = np.stack(out)
    assert 0 < y.sum() < y.size
    case("neuron_cubalif_exact", neuron_graph(P.CubaLIF(ts, tm, r, leak, thr, reset, w_in),
                                              discretization="exact"), x, y, **TOL)


# --- extension fields of the spiking kinds --------------------------------------------------
# NIR has no field for them: the NIR round trip refuses, naming the first one set.

def NIR_REFUSES(field):  # noqa: N802 - reads as a constant at the call
    return {"nir": field}


def lif_params(rng):
    return rng.uniform(3e-3, 1e-2, N), rng.uniform(1, 3, N), rng.normal(0, 0.2, N), full(1.0)


def cubalif_params(rng):
    """tau_syn, tau_mem, r, v_leak, w_in"""
    return (rng.uniform(2e-3, 5e-3, N), rng.uniform(3e-3, 1e-2, N), rng.uniform(3, 6, N),
            rng.normal(0, 0.2, N), rng.uniform(1, 2, N))


@golden
def neuron_lif_subtract(rng):
    tau, r, leak, thr = lif_params(rng)
    x = drive(rng, 2.0)
    v, out = np.zeros((B, N)), []
    for t in range(T):
        v = v + DT / tau * (leak - v + r * x[t])
        z = (v > thr).astype(np.float64)
        v = v - z * thr  # the threshold is removed, the rest stays
        out.append(z)
    y = np.stack(out)
    assert 0 < y.sum() < y.size
    case("neuron_lif_subtract", neuron_graph(P.LIF(tau, r, leak, thr, reset_mode="subtract")),
         x, y, refused=NIR_REFUSES("reset_mode"), **TOL)


@golden
def neuron_lif_delayed_subtract(rng):
    """snnTorch's default Leaky: the spike of step t is subtracted at step t + 1, after that step's
    integration (U[t+1] = beta U[t] + I[t+1] - S[t] U_thr)."""
    tau, r, leak, thr = lif_params(rng)
    x = drive(rng, 2.0)
    v, out = np.zeros((B, N)), []
    for t in range(T):
        pending = (v > thr).astype(np.float64)  # the carried membrane spiked last step
        v = v + DT / tau * (leak - v + r * x[t]) - pending * thr
        out.append((v > thr).astype(np.float64))
    y = np.stack(out)
    assert 0 < y.sum() < y.size
    case("neuron_lif_delayed_subtract",
         neuron_graph(P.LIF(tau, r, leak, thr, reset_mode="subtract", reset_delay=True)), x, y,
         refused=NIR_REFUSES("reset_mode"), **TOL)


@golden
def neuron_lif_delayed_reset(rng):
    """Delayed reset to v_reset (snnTorch's reset_mechanism="zero"): the carried membrane is
    replaced before the next step integrates; the membrane is carried un-reset meanwhile."""
    tau, r, leak, thr = lif_params(rng)
    reset = rng.uniform(-0.3, 0.1, N)
    x = drive(rng, 2.0)
    v, out = np.zeros((B, N)), []
    for t in range(T):
        v = np.where(v > thr, reset, v)
        v = v + DT / tau * (leak - v + r * x[t])
        out.append((v > thr).astype(np.float64))
    y = np.stack(out)
    assert 0 < y.sum() < y.size
    case("neuron_lif_delayed_reset",
         neuron_graph(P.LIF(tau, r, leak, thr, reset, reset_delay=True)), x, y,
         refused=NIR_REFUSES("reset_delay"), **TOL)


@golden
def neuron_cubalif_reset_after_update(rng):
    """snnTorch's Synaptic with reset_mechanism="zero": the carried membrane's spike sets the
    membrane to v_reset after the next step's update (that step's drive is lost to it), while the
    current keeps integrating."""
    ts, tm, r, leak, w_in = cubalif_params(rng)
    thr, reset = full(1.0), rng.uniform(-0.3, 0.1, N)
    x = drive(rng, 2.0)
    i, v, out = np.zeros((B, N)), np.zeros((B, N)), []
    for t in range(T):
        pending = v > thr  # the carried membrane spiked last step
        i = i + DT / ts * (-i + w_in * x[t])
        v = v + DT / tm * (leak - v + r * i)
        v = np.where(pending, reset, v)
        out.append((v > thr).astype(np.float64))
    y = np.stack(out)
    assert 0 < y.sum() < y.size
    # a spike is never followed by another in the next step (the membrane sits at v_reset)
    assert not (y[1:] * y[:-1]).any()
    node = P.CubaLIF(ts, tm, r, leak, thr, reset, w_in, reset_mode="v_reset_after_update",
                     reset_delay=True)
    case("neuron_cubalif_reset_after_update", neuron_graph(node), x, y,
         refused=NIR_REFUSES("reset_mode"), **TOL)


@golden
def neuron_lif_no_reset(rng):
    """snnTorch's reset_mechanism="none": spikes are emitted, the membrane is never reset."""
    tau, r, leak, thr = lif_params(rng)
    x = drive(rng, 1.2)
    v, out = np.zeros((B, N)), []
    for t in range(T):
        v = v + DT / tau * (leak - v + r * x[t])
        out.append((v > thr).astype(np.float64))
    y = np.stack(out)
    assert 0 < y.sum() < y.size
    case("neuron_lif_no_reset", neuron_graph(P.LIF(tau, r, leak, thr, reset_mode="none")), x, y,
         refused=NIR_REFUSES("reset_mode"), **TOL)


@golden
def neuron_lif_subtract_pending_in_test(rng):
    """snnTorch's Leaky with reset_mechanism="subtract" and reset_delay=False: a spike removes
    the threshold at once, but the spike test also removes the previous step's spike (read off
    the carried membrane), so a membrane left above threshold needs twice it to spike again."""
    tau, r, leak, thr = lif_params(rng)
    x = drive(rng, 3.0)
    v, plain, out, plain_out = np.zeros((B, N)), np.zeros((B, N)), [], []
    for t in range(T):
        pending = (v > thr).astype(np.float64)
        v = v + DT / tau * (leak - v + r * x[t])
        z = (v - pending * thr > thr).astype(np.float64)
        v = v - z * thr
        out.append(z)
        plain = plain + DT / tau * (leak - plain + r * x[t])  # reset_mode "subtract"
        plain_out.append((plain > thr).astype(np.float64))
        plain = plain - plain_out[-1] * thr
    y = np.stack(out)
    assert 0 < y.sum() < y.size
    assert (y != np.stack(plain_out)).any()  # the pending spike changes some spike test
    node = P.LIF(tau, r, leak, thr, reset_mode="subtract_pending_in_test")
    case("neuron_lif_subtract_pending_in_test", neuron_graph(node), x, y,
         refused=NIR_REFUSES("reset_mode"), **TOL)


@golden
def neuron_if_multi_spike(rng):
    """sinabs' IAF with MultiSpike and MembraneSubtract: floor(v / v_threshold) spikes once
    v >= v_threshold, each removing one threshold."""
    r, thr = rng.uniform(2000, 4000, N), full(1.0)
    x = drive(rng)
    v, out = np.zeros((B, N)), []
    for t in range(T):
        v = v + DT * r * x[t]
        n = np.where(v >= thr, np.floor(v / thr), 0.0)
        v = v - n * thr
        out.append(n)
    y = np.stack(out)
    assert y.max() >= 2 and (y == 0).any()
    node = P.IF(r, thr, reset_mode="subtract", spike_rule="multi", threshold_compare=">=")
    case("neuron_if_multi_spike", neuron_graph(node), x, y, refused=NIR_REFUSES("reset_mode"),
         **TOL)


@golden
def neuron_lif_spike_cap(rng):
    """sinabs' LIF with MaxSpike(3) and MembraneSubtract: min(floor(v / v_threshold), 3) spikes
    once v >= v_threshold, each removing one threshold (what is left over carries on)."""
    tau, r, thr = rng.uniform(2e-3, 6e-3, N), rng.uniform(4, 8, N), full(1.0)
    x = drive(rng)
    v, out = np.zeros((B, N)), []
    for t in range(T):
        v = v + DT / tau * (-v + r * x[t])
        n = np.where(v >= thr, np.minimum(np.floor(v / thr), 3.0), 0.0)
        v = v - n * thr
        out.append(n)
    y = np.stack(out)
    assert y.max() == 3 and (y == 2).any() and (y == 0).any()
    node = P.LIF(tau, r, full(0.0), thr, reset_mode="subtract", spike_rule="multi",
                 threshold_compare=">=", max_spikes=3)
    case("neuron_lif_spike_cap", neuron_graph(node), x, y, refused=NIR_REFUSES("max_spikes"),
         **TOL)


@golden
def neuron_cubalif_multi_spike_reset(rng):
    ts, tm, r, leak, w_in = cubalif_params(rng)
    thr, reset = full(0.5), rng.uniform(-0.2, 0.0, N)
    x = drive(rng, 3.0)
    i, v, out = np.zeros((B, N)), np.zeros((B, N)), []
    for t in range(T):
        i = i + DT / ts * (-i + w_in * x[t])
        v = v + DT / tm * (leak - v + r * i)
        n = np.where(v > thr, np.floor(v / thr), 0.0)
        v = np.where(n > 0, reset, v)
        out.append(n)
    y = np.stack(out)
    assert y.max() >= 2 and (y == 0).any()
    node = P.CubaLIF(ts, tm, r, leak, thr, reset, w_in, spike_rule="multi")
    case("neuron_cubalif_multi_spike_reset", neuron_graph(node), x, y,
         refused=NIR_REFUSES("spike_rule"), **TOL)


@golden
def neuron_if_threshold_compare(rng):
    """v reaches the threshold exactly (steps of 0.25 towards 1): ">=" spikes at that step,
    NIR's ">" one step later."""
    dt = 0.25
    x = np.ones((12, B, N))
    out = {}
    for compare in (">", ">="):
        v, zs = np.zeros((B, N)), []
        for t in range(len(x)):
            v = v + dt * 1.0 * x[t]
            z = (v >= 1.0) if compare == ">=" else (v > 1.0)
            v = np.where(z, 0.0, v)
            zs.append(z.astype(np.float64))
        out[compare] = np.stack(zs)
    assert out[">="][3].all() and not out[">"][3].any() and out[">"][4].all()
    node = P.IF(full(1.0), full(1.0), threshold_compare=">=")
    case("neuron_if_threshold_compare", neuron_graph(node, dt=dt), x, out[">="],
         refused=NIR_REFUSES("threshold_compare"), **TOL)


# --- the recurrent edge is delayed on the spikes ---------------------------------------------

@golden
def recurrent_affine_bias(rng):
    """x -> fc -> lif, lif -> rec (an Affine with bias) -> lif, as snnTorch's RLeaky: the
    recurrent layer reads the previous step's spikes (zeros at t = 0) and adds its bias at
    every step, t = 0 included."""
    n_in, n = 3, 5
    w1 = rng.normal(0, 1.0, (n, n_in))
    wr, br = rng.normal(0, 0.5, (n, n)), rng.uniform(0.3, 0.8, n)
    tau, r, leak, thr = np.full(n, 4e-3), np.full(n, 2.0), np.zeros(n), np.full(n, 0.3)
    g = P.Graph(metadata={"dt": DT})
    g.add("x", P.Input((n_in,)))
    g.add("fc", P.Linear(w1))
    g.add("lif", P.LIF(tau, r, leak, thr))
    g.add("rec", P.Affine(wr, br))
    g.add("y", P.Output((n,)))
    for e in [("x", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "y")]:
        g.connect(*e)
    x = rng.normal(0.0, 0.5, size=(T, B, n_in))
    v, z, out = np.zeros((B, n)), np.zeros((B, n)), []
    for t in range(T):
        h = x[t] @ w1.T + (z @ wr.T + br)
        v = v + DT / tau * (leak - v + r * h)
        z = (v > thr).astype(np.float64)
        v = np.where(z > 0, 0.0, v)
        out.append(z)
    y = np.stack(out)
    assert 0 < y.sum() < y.size
    case("recurrent_affine_bias", g, x, y, **TOL)
