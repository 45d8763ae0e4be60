"""heyoka ODE systems (polyir.importers.heyoka_ode) and ODE programs (polyir.compile(g, "heyoka")
on neuron graphs): closed-form LI / CubaLI solutions, hand-solved LIF spike times, the NIR paper's
exact LIF reference, batch mode, float32, options, extension fields. References are written here,
never taken from polyir."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import polyir
from polyir import ir
from polyir.importers.heyoka_ode import to_heyoka_ode

hy = pytest.importorskip("heyoka")


def heyoka_compile(graph, **options):
    return polyir.compile(graph, "heyoka", **options)


def li_graph(w, b, tau, r, v_leak):
    g = ir.Graph(metadata={"dt": 1e-3})
    g.add("x", ir.Input((w.shape[1],)))
    g.add("fc", ir.Affine(w, b))
    g.add("li", ir.LI(tau=tau, r=r, v_leak=v_leak))
    g.add("y", ir.Output((w.shape[0],)))
    for e in [("x", "fc"), ("fc", "li"), ("li", "y")]:
        g.connect(*e)
    return g


def test_li_step_closed_form_and_euler_convergence():
    rng = np.random.default_rng(7)
    w, b = rng.normal(size=(3, 2)), rng.normal(size=3)
    tau, r = np.array([0.01, 0.02, 0.05]), np.array([1.0, 2.0, 0.5])
    v_leak = np.array([0.1, 0, -0.2])
    g = li_graph(w, b, tau, r, v_leak)
    ode = to_heyoka_ode(g)
    T_end, step_at, u = 0.1, 0.02, np.array([1.5, -0.7])

    def closed(t):
        """v(t) from v = 0: input 0 before step_at, u after (NIR's LI, solved by hand)."""
        t = np.asarray(t)[:, None]
        v_inf0 = v_leak + r * b
        v1 = v_inf0 * (1 - np.exp(-np.minimum(t, step_at) / tau))
        v_inf1 = v_leak + r * (w @ u + b)
        return np.where(t <= step_at, v1, v_inf1 + (v1 - v_inf1) * np.exp(-(t - step_at) / tau))

    dt = 1e-3
    n = int(round(T_end / dt))
    seq = np.zeros((n, 2))
    seq[int(round(step_at / dt)):] = u
    run = ode.run(seq)  # dt from the graph's metadata
    np.testing.assert_allclose(run.outputs, closed(run.t), rtol=0, atol=1e-10)

    def euler(dt):
        n = int(round(T_end / dt))
        v = np.zeros(3)
        for k in range(n):
            x = u if k * dt >= step_at - 1e-12 else np.zeros(2)
            v = v + dt / tau * (v_leak - v + r * (w @ x + b))
        return v

    dts = (1e-3, 5e-4, 2.5e-4, 1.25e-4)
    errs = [np.abs(euler(d) - closed([T_end])[0]).max() for d in dts]
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all(np.diff(errs) < 0), errs
    np.testing.assert_allclose(ratios, 2.0, rtol=0.1)  # first order
    # polyir.to_torch's forward Euler (NIR's reference) converges the same way
    terrs = []
    for d in dts:
        n = int(round(T_end / d))
        seq = np.zeros((n, 1, 2))
        seq[int(round(step_at / d)):] = u
        with torch.no_grad():
            out = polyir.to_torch(g, dt=d).run(torch.from_numpy(seq)).numpy()
        terrs.append(np.abs(out[-1, 0] - closed([T_end])[0]).max())
    np.testing.assert_allclose(terrs, errs, rtol=1e-6)


def test_li_equals_torch_exact_discretisation():
    """torch's 'exact' (zero-order hold) LI step is the ODE's solution for piecewise-constant
    input: heyoka agrees with polyir.nn.LI to 1e-12 (and differs from Euler)."""
    nn = pytest.importorskip("polyir.nn")
    rng = np.random.default_rng(8)
    tau, r, v_leak = np.array([0.01, 0.03]), np.array([1.0, 0.5]), np.array([0.0, 0.1])
    g = li_graph(np.eye(2), np.zeros(2), tau, r, v_leak)
    seq = rng.normal(size=(60, 2))
    ours = to_heyoka_ode(g).run(seq, 1e-3).outputs
    neuron = nn.LI(torch.tensor(tau), torch.tensor(r), torch.tensor(v_leak), dt=1e-3,
                   discretization="exact")
    state, ys = None, []
    with torch.no_grad():
        for k in range(len(seq)):
            y, state = neuron(torch.from_numpy(seq[k:k + 1]), state)
            ys.append(y[0].numpy())
    np.testing.assert_allclose(ours, np.array(ys), rtol=0, atol=1e-12)


def test_cuba_li_closed_form():
    ts, tm, r, w_in = 5e-3, 2e-2, 2.0, 1.5
    g = ir.Graph.sequential(ir.CubaLI(tau_syn=np.array([ts]), tau_mem=np.array([tm]),
                                      r=np.array([r]), v_leak=np.array([0.0]),
                                      w_in=np.array([w_in])))
    run = to_heyoka_ode(g).run(np.full(100, 0.8), 1e-3)
    t, c = run.t, 0.8 * w_in
    i_ref = c * (1 - np.exp(-t / ts))
    v_ref = r * c * (1 - (tm * np.exp(-t / tm) - ts * np.exp(-t / ts)) / (tm - ts))
    np.testing.assert_allclose(run.states[:, 0], i_ref, atol=1e-12)
    np.testing.assert_allclose(run.outputs[:, 0], v_ref, atol=1e-12)


def lif_spike_times(inputs, dt, tau, r, thr, reset):
    """Exact spike times of tau dv/dt = -v + r u for piecewise-constant u (solved by hand)."""
    v, spikes = 0.0, []
    for k, u in enumerate(inputs):
        t, left = k * dt, dt
        while True:
            vinf = r * u
            if vinf > thr and v < thr:
                s = tau * np.log((vinf - v) / (vinf - thr))
                if s <= left:
                    spikes.append(t + s)
                    t, left, v = t + s, left - s, reset
                    continue
            v = vinf + (v - vinf) * np.exp(-left / tau)
            break
    return np.array(spikes)


def test_lif_norse_exact_spike_times(nir_data):
    g = polyir.load(nir_data / "lif_norse.nir")
    data = np.loadtxt(nir_data / "lif_exact.csv", delimiter=",")
    dt = 1e-4
    lif = next(k for k in g.nodes.values() if isinstance(k, ir.LIF))
    run = to_heyoka_ode(g).run(data[:, 0], dt)
    got = run.spike_times()
    ref = lif_spike_times(data[:, 0], dt, float(lif.tau[0]), float(lif.r[0]),
                          float(lif.v_threshold[0]), float(lif.v_reset[0]))
    assert len(got) == len(ref) == 4
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    # the NIR paper's exact solution: a spike in row k happened within step k
    rows = np.nonzero(data[:, 2])[0]
    assert np.all(np.abs(got - (rows + 0.5) * dt) <= 0.5 * dt)
    np.testing.assert_array_equal(np.nonzero(run.outputs[:, 0])[0], rows)
    # membrane: equal up to the file's float32 tau
    np.testing.assert_allclose(run.states[:, 0], data[:, 1], atol=1e-7)


def test_spike_charge_into_li():
    """LIF -> Linear(w) -> LI: each spike adds charge * w * r / tau to the LI (set charge 1)."""
    tau, thr, tau2, w = 2e-3, 0.5, 1e-2, 0.3
    g = ir.Graph()
    g.add("x", ir.Input((1,)))
    g.add("lif", ir.LIF(tau=np.array([tau]), r=np.ones(1), v_leak=np.zeros(1),
                        v_threshold=np.array([thr])))
    g.add("w", ir.Linear(np.array([[w]])))
    g.add("li", ir.LI(tau=np.array([tau2]), r=np.ones(1), v_leak=np.zeros(1)))
    g.add("y", ir.Output((1,)))
    g.add("z", ir.Output((1,)))
    for e in [("x", "lif"), ("lif", "w"), ("w", "li"), ("li", "y"), ("lif", "z")]:
        g.connect(*e)
    ode = to_heyoka_ode(g, spike_charge=1.0)
    run = ode.run(np.full(50, 1.0), 1e-3)
    spikes = run.spike_times("lif")
    period = tau * np.log(1 / (1 - thr))
    np.testing.assert_allclose(spikes, period * np.arange(1, len(spikes) + 1), atol=1e-12)
    assert len(spikes) == int(0.05 // period)
    li = np.array([sum(w / tau2 * np.exp(-(t - s) / tau2) for s in spikes if s < t)
                   for t in run.t])
    np.testing.assert_allclose(run.outputs[:, 0], li, atol=1e-9)
    counts = np.array([np.sum((spikes > t - 1e-3) & (spikes <= t)) for t in run.t])
    np.testing.assert_array_equal(run.outputs[:, 1], counts)


def test_spikes_into_nonlinear_node_refused():
    g = ir.Graph.sequential(ir.LIF(tau=np.ones(1), r=np.ones(1), v_leak=np.zeros(1),
                                   v_threshold=np.ones(1)), ir.Activation("tanh"))
    with pytest.raises(polyir.GraphError, match="spikes of 'lif' reach a nonlinear node"):
        to_heyoka_ode(g)


def test_mlp_right_hand_side():
    """A graph without neurons is dx/dt = graph(x): linear layer -> matrix exponential."""
    a = np.array([[-1.0, 2.0], [-2.0, -0.5]])
    ode = to_heyoka_ode(ir.Graph.sequential(ir.Linear(a)))
    x0 = np.array([1.0, 0.5])
    ta = ode.integrator(x0)
    times = np.linspace(0, 2, 11)
    got = ta.propagate_grid(times)[-1]
    lam, vec = np.linalg.eig(a)
    ref = np.array([(vec @ np.diag(np.exp(lam * t)) @ np.linalg.solve(vec, x0)).real
                    for t in times])
    np.testing.assert_allclose(got, ref, atol=1e-12)


def lif_graph(tau, thr, reset=0.0, self_weight=None, dtype=np.float64):
    """x -> LIF (one neuron) -> y; with self_weight, a recurrent Linear lif -> lif."""
    g = ir.Graph()
    g.add("x", ir.Input((1,)))
    g.add("lif", ir.LIF(tau=np.array([tau], dtype), r=np.ones(1, dtype),
                        v_leak=np.zeros(1, dtype), v_threshold=np.array([thr], dtype),
                        v_reset=np.array([reset], dtype)))
    g.add("y", ir.Output((1,)))
    g.connect("x", "lif")
    g.connect("lif", "y")
    if self_weight is not None:
        g.add("w", ir.Linear(np.array([[self_weight]], dtype)))
        g.connect("lif", "w")
        g.connect("w", "lif")
    return g


def test_batch_mode_spike_times_per_sequence():
    """Five input sequences side by side in heyoka's batch mode (chunks of 2 lanes, the last one
    padded): each one's spikes are the hand-solved exact times of its own input."""
    tau, thr, dt = 2e-3, 0.5, 1e-3
    g = lif_graph(tau, thr)
    u = np.random.default_rng(15).uniform(0.0, 2.0, size=(40, 5))
    prog = heyoka_compile(g, dt=dt, batch_size=2, compact_mode=True)
    assert prog.integrator is not None and prog.compile_seconds > 0  # compiled before any run
    assert prog.integrator.compact_mode and prog.integrator.batch_size == 2
    out = prog.run(u[:, :, None])
    for b in range(5):
        ref = lif_spike_times(u[:, b], dt, tau, 1.0, thr, 0.0)
        got = prog.last_run.spike_times(batch=b)
        assert len(got) == len(ref) > 0
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
        counts = np.array([np.sum((ref > k * dt) & (ref <= (k + 1) * dt)) for k in range(40)])
        np.testing.assert_array_equal(out[:, b, 0], counts)


def test_float32_graph_runs_in_float32():
    tau, thr, dt = 2e-3, 0.5, 1e-3
    prog = heyoka_compile(lif_graph(tau, thr, dtype=np.float32), dt=dt)
    assert prog.dtype == np.float32 and type(prog.integrator).__name__.endswith("_flt")
    u = np.random.default_rng(16).uniform(0.0, 2.0, size=(30, 3, 1)).astype(np.float32)
    prog.run(u)
    for b in range(3):
        ref = lif_spike_times(u[:, b, 0].astype(np.float64), dt, tau, 1.0, thr, 0.0)
        np.testing.assert_allclose(prog.last_run.spike_times(batch=b), ref, rtol=0, atol=1e-8)
    mlp = ir.Graph.sequential(ir.Affine(np.ones((2, 3), np.float32), np.zeros(2, np.float32)))
    p = heyoka_compile(mlp)
    assert type(p.cfunc).__name__.endswith("_flt") and p(np.ones((4, 3))).dtype == np.float32


def test_threads_honoured_or_refused():
    g = ir.Graph.sequential(ir.Affine(np.eye(3), np.ones(3)))
    x = np.random.default_rng(17).normal(size=(1000, 3))
    p = heyoka_compile(g)
    before = hy.get_nthreads()
    np.testing.assert_allclose(p(x, threads=2), x + 1, atol=1e-15)
    assert hy.get_nthreads() == before  # heyoka's pool size is restored
    with pytest.raises(polyir.GraphError, match="threads=0"):
        p(x, threads=0)
    ode = heyoka_compile(lif_graph(2e-3, 0.5), dt=1e-3)
    with pytest.raises(polyir.GraphError, match="no effect on a heyoka ODE program"):
        ode.run(np.ones((3, 1, 1)), threads=4)


def test_self_exciting_neuron_and_reset_above_threshold():
    """A spike that lifts its own neuron over the threshold again would repeat without end in
    continuous time: a GraphError names the neuron and the way out, and that way out (discrete
    time, where the recurrent spike arrives a step later) runs."""
    g = lif_graph(2e-3, 0.5, self_weight=1000.0)
    with pytest.raises(polyir.GraphError, match="spikes twice at the same instant") as info:
        to_heyoka_ode(g).run(np.full(10, 2.0), 1e-3)
    assert "polyir.to_torch(graph, dt=...)" in str(info.value)
    m = polyir.to_torch(g, dt=1e-3)
    assert m is not None
    with pytest.raises(polyir.GraphError, match="v_reset"):
        to_heyoka_ode(lif_graph(2e-3, 0.5, reset=0.7))


def test_extension_fields_honoured_or_refused():
    """reset_mode='subtract' takes v_threshold off at the crossing (so v restarts at 0, not at
    v_reset); threshold_compare changes nothing in continuous time; the discrete-step fields are
    refused by name. 0-d parameters take their shape from the input edge."""
    tau, thr, dt = 2e-3, 0.5, 1e-3
    u = np.random.default_rng(18).uniform(0.5, 2.0, size=(30, 3))

    def lif(**options):
        g = ir.Graph()
        g.add("x", ir.Input((3,)))
        g.add("lif", ir.LIF(tau=np.array(tau), r=np.array(1.0), v_leak=np.array(0.0),
                            v_threshold=np.array(thr), v_reset=np.array(0.2), **options))
        g.add("y", ir.Output((3,)))
        g.connect("x", "lif")
        g.connect("lif", "y")
        return g

    run = to_heyoka_ode(lif(reset_mode="subtract", threshold_compare=">=")).run(u[:, None], dt)
    for k in range(3):
        ref = lif_spike_times(u[:, k], dt, tau, 1.0, thr, 0.0)
        np.testing.assert_allclose(run.spike_times("lif", k, batch=0), ref, rtol=0, atol=1e-12)
    plain = to_heyoka_ode(lif()).run(u, dt)
    np.testing.assert_allclose(plain.spike_times("lif", 0),
                               lif_spike_times(u[:, 0], dt, tau, 1.0, thr, 0.2), atol=1e-12)
    for field, value in (("reset_delay", True), ("spike_rule", "multi"), ("reset_mode", "none"),
                         ("reset_mode", "subtract_pending_in_test")):
        with pytest.raises(polyir.GraphError, match=f"{field}={value!r}") as info:
            to_heyoka_ode(lif(**{field: value}))
        assert info.value.field == field


def test_ode_params_after_inputs():
    """to_heyoka_ode(params=True) on a neuron graph: the inputs keep par[0..n_in-1], the Affine's
    weight and bias follow in the documented order, and the system integrates them: LI under a
    constant input relaxes to v_leak + r (W u + b) (solved by hand)."""
    rng = np.random.default_rng(19)
    w, bias, tau = rng.normal(size=(2, 2)), rng.normal(size=2), np.array([2e-3, 5e-3])
    g = ir.Graph.sequential(ir.Affine(w, bias),
                            ir.LI(tau=tau, r=np.ones(2), v_leak=np.full(2, 0.1)), input_shape=(2,))
    ode = to_heyoka_ode(g, params=True)
    assert sorted(ode.par_map) == list(range(2, 8))
    assert [ode.par_map[i][1:] for i in (2, 5, 6, 7)] == [("weight", 0), ("weight", 3),
                                                           ("bias", 0), ("bias", 1)]
    np.testing.assert_array_equal(ode.par_values, np.concatenate([w.ravel(), bias]))
    u = np.array([0.7, -0.4])
    run = ode.run(np.tile(u, (20, 1)), 1e-3)
    v_inf = 0.1 + w @ u + bias
    ref = v_inf * (1 - np.exp(-run.t[:, None] / tau))
    np.testing.assert_allclose(run.outputs, ref, rtol=0, atol=1e-12)


def test_options_heyoka_does_not_take_are_refused():
    g = ir.Graph.sequential(ir.Affine(np.eye(2), np.zeros(2)))
    with pytest.raises(polyir.GraphError, match="heyoka.cfunc does not take.*no_such_option"):
        heyoka_compile(g, no_such_option=1)
    with pytest.raises(polyir.GraphError, match="no discretization"):
        heyoka_compile(lif_graph(2e-3, 0.5), dt=1e-3, discretization="euler")
    with pytest.raises(polyir.GraphError, match="dt= has no effect"):
        heyoka_compile(g, dt=1e-3)
    with pytest.raises(polyir.GraphError, match=r"polyir.compile\(graph, 'heyoka', dt="):
        heyoka_compile(lif_graph(2e-3, 0.5)).run(np.ones((2, 1, 1)))
