"""Leaky-integrator neurons (I, IF, LI, LIF, CubaLI, CubaLIF), Delay and a recurrent net, against
numpy forward-Euler loops (NIR's reference discretisation) at the graph's metadata dt.

Graphs are float64 so that spike decisions cannot flip on rounding. Inputs are (T, batch, n)
sequences; the state starts at zero.
"""
import numpy as np

import polyir as P
from golden import case, golden

DT = 1e-3
TOL = dict(rtol=1e-9, atol=1e-12)
T, B, N = 40, 3, 4


def neuron_graph(node, n=N):
    g = P.Graph(metadata={"dt": DT})
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
