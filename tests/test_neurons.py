"""Neuron kinds: the discretization and dt reach every backend, the exact step is the closed-form
solution, a recurrent Affine's bias acts from the first step, 0-d parameters broadcast, NIR nodes
holding tensors that require grad are read. References are numpy, written here."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import polyir
from polyir import ir
from polyir import nn as pnn

F32 = np.float32


def chain(node, n, dt=None, discretization=None):
    meta = {}
    if dt is not None:
        meta["dt"] = dt
    if discretization is not None:
        meta["discretization"] = discretization
    g = ir.Graph(metadata=meta)
    g.add("x", ir.Input((n,)))
    g.add("neuron", node)
    g.add("y", ir.Output((n,)))
    g.connect("x", "neuron")
    g.connect("neuron", "y")
    return g


def li_tau10():
    return ir.LI(tau=np.full(1, 10.0, F32), r=np.full(1, 2.0, F32), v_leak=np.zeros(1, F32))


def test_li_exact_step_in_c_and_torch_equals_the_closed_form():
    # tau dv/dt = -v + r * 1 from v = 0: v(t) = r (1 - exp(-t / tau)), sampled at t = 1, 2, ...
    t = np.arange(1, 6)
    closed = 2.0 * (1 - np.exp(-t / 10.0))
    assert np.allclose(closed[:2], [0.1903, 0.3625], atol=1e-4)
    euler = [0.2, 0.38, 0.542, 0.6878, 0.81902]  # v += dt / tau (r - v), by hand
    seq = np.ones((5, 1, 1), F32)
    exact_graph = chain(li_tau10(), 1, dt=1.0, discretization="exact")
    for got in (polyir.compile(exact_graph, "c").run(seq),
                polyir.compile(chain(li_tau10(), 1, dt=1.0), "c", discretization="exact").run(seq),
                polyir.compile(exact_graph, "torch").run(seq)):
        np.testing.assert_allclose(got[:, 0, 0], closed, rtol=1e-6)
    # the option overrides the recorded discretization, in C as in torch
    for backend in ("c", "torch"):
        got = polyir.compile(exact_graph, backend, discretization="euler").run(seq)
        np.testing.assert_allclose(got[:, 0, 0], euler, rtol=1e-6)


def test_compile_without_dt_asks_for_it():
    with pytest.raises(polyir.GraphError, match="dt=") as err:
        polyir.compile(chain(li_tau10(), 1), "c")
    assert err.value.field == "dt"
    with pytest.raises(polyir.GraphError, match="discretization"):
        polyir.compile(chain(li_tau10(), 1, dt=1.0), "c", discretization="rk4")


def test_cuba_exact_step_is_the_solution_of_the_coupled_odes():
    """Against a fine RK4 integration of tau_syn di/dt = -i + w x, tau_mem dv/dt = v_leak - v + r i
    with x held over each step; one neuron has tau_syn == tau_mem (the limit case)."""
    ts = np.array([2e-3, 5e-3, 1e-2], np.float64)
    tm = np.array([1e-2, 5e-3, 4e-3], np.float64)
    r, leak, w = np.array([1.5, 2.0, 0.7]), np.array([0.1, -0.2, 0.0]), np.array([0.8, 1.2, 2.0])
    dt, steps = 1e-3, 12
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 1.0, (steps, 2, 3))

    def rhs(i, v, u):
        return (-i + w * u) / ts, (leak - v + r * i) / tm

    i, v, want = np.zeros((2, 3)), np.zeros((2, 3)), []
    sub = 200
    h = dt / sub
    for k in range(steps):
        for _ in range(sub):
            a1, b1 = rhs(i, v, x[k])
            a2, b2 = rhs(i + h / 2 * a1, v + h / 2 * b1, x[k])
            a3, b3 = rhs(i + h / 2 * a2, v + h / 2 * b2, x[k])
            a4, b4 = rhs(i + h * a3, v + h * b3, x[k])
            i, v = i + h / 6 * (a1 + 2 * a2 + 2 * a3 + a4), v + h / 6 * (b1 + 2 * b2 + 2 * b3 + b4)
        want.append(v)
    g = chain(ir.CubaLI(ts, tm, r, leak, w), 3, dt=dt, discretization="exact")
    for backend in ("torch", "c"):
        got = polyir.compile(g, backend).run(x)
        np.testing.assert_allclose(got, np.stack(want), rtol=1e-9, atol=1e-12)


def exact_lif_model(rng, n_in=20, n=64):
    torch.manual_seed(int(rng.integers(1 << 30)))
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, n),
        pnn.LIF(torch.from_numpy(rng.uniform(5e-3, 2e-2, n).astype(F32)), torch.ones(n),
                torch.zeros(n), torch.full((n,), 0.1), dt=1e-3, discretization="exact"))


def test_exported_exact_lif_net_spikes_alike_in_torch_and_c(tmp_path):
    rng = np.random.default_rng(5)
    model = exact_lif_model(rng)
    g = polyir.export(model, torch.zeros(2, 20))
    assert g.metadata["discretization"] == "exact"
    seq = (rng.random((150, 32, 20)) < 0.3).astype(F32) * 4
    spikes_torch = polyir.compile(g, "torch").run(seq)
    spikes_c = polyir.compile(g, "c").run(seq)
    assert spikes_torch.sum() > 500
    assert spikes_c.sum() == spikes_torch.sum()
    np.testing.assert_array_equal(spikes_c, spikes_torch)
    # and the torch model itself, stepped by hand, gives the same spikes
    with torch.no_grad():
        state, ys = None, []
        lin, lif = model
        for x in torch.from_numpy(seq):
            z, state = lif(lin(x), state)
            ys.append(z)
    np.testing.assert_array_equal(torch.stack(ys).numpy(), spikes_torch)
    # the CLI's compare agrees on the saved file
    path = tmp_path / "exact_lif.h5"
    polyir.save(g, path)
    run = subprocess.run([sys.executable, "-m", "polyir.cli", "compare", str(path), "--backends",
                          "torch,c", "--steps", "40", "--batch", "16", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "MISMATCH" not in run.stdout
    json.loads(run.stdout)


def test_recurrent_affine_bias_acts_from_the_first_step():
    """x -> fc -> lif <-> rec (an Affine with bias): the recurrent edge is read one step late on
    the spikes, so rec gives W z(t-1) + b, b included at t = 0 (as snnTorch's RLeaky)."""
    rng = np.random.default_rng(11)
    n_in, n, dt = 3, 4, 1e-3
    w1 = rng.normal(0, 1, (n, n_in))
    wr, br = rng.normal(0, 0.5, (n, n)), np.full(n, 0.6)
    tau, thr = np.full(n, 5e-3), np.full(n, 0.05)
    g = ir.Graph(metadata={"dt": dt})
    g.add("x", ir.Input((n_in,)))
    g.add("fc", ir.Linear(w1))
    g.add("lif", ir.LIF(tau, np.ones(n), np.zeros(n), thr))
    g.add("rec", ir.Affine(wr, br))
    g.add("y", ir.Output((n,)))
    for e in [("x", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "y")]:
        g.connect(*e)
    x = np.zeros((6, 2, n_in))  # no input at all: only the recurrent bias drives the neurons
    v, z, want = np.zeros((2, n)), np.zeros((2, n)), []
    for t in range(len(x)):
        h = x[t] @ w1.T + z @ wr.T + br
        v = v + dt / tau * (-v + h)
        z = (v > thr).astype(np.float64)
        v = np.where(z > 0, 0.0, v)
        want.append(z)
    want = np.stack(want)
    assert want[:2].sum() > 0  # the bias alone makes them spike early
    for backend in ("torch", "c"):
        np.testing.assert_array_equal(polyir.compile(g, backend).run(x), want)


def test_zero_d_parameters_broadcast_to_the_input_shape():
    g = ir.Graph(metadata={"dt": 1e-3})
    g.add("x", ir.Input((5,)))
    g.add("lif", ir.LIF(np.array(0.01), np.array(1.0), np.array(0.0), np.array(0.2)))
    g.add("y", ir.Output((5,)))
    g.connect("x", "lif")
    g.connect("lif", "y")
    g.check()
    assert g.infer_types()["lif"].shape == (5,)
    x = np.random.default_rng(1).normal(1.0, 1.0, (30, 3, 5))
    v, want = np.zeros((3, 5)), []
    for t in range(len(x)):
        v = v + 0.1 * (-v + x[t])
        z = v > 0.2
        v = np.where(z, 0.0, v)
        want.append(z)
    for backend in ("torch", "c"):
        np.testing.assert_array_equal(polyir.compile(g, backend).run(x), np.stack(want))
    # a 0-d value beside shaped ones is one value for every neuron
    node = ir.LIF(np.full(3, 0.01), 1.0, 0.0, np.full(3, 0.2))
    assert node.r.shape == (3,) and node.v_reset.shape == (3,)
    with pytest.raises(polyir.GraphError, match="shape") as err:
        ir.LIF(np.full(3, 0.01), np.ones(2), 0.0, 0.2)
    assert err.value.field == "r"


def test_from_nir_reads_tensors_that_require_grad():
    nir = pytest.importorskip("nir")
    node = nir.LIF(tau=torch.full((3,), 0.01, requires_grad=True), r=torch.ones(3),
                   v_leak=torch.zeros(3), v_threshold=torch.ones(3, requires_grad=True),
                   v_reset=torch.zeros(3))
    g = polyir.from_nir(node)
    lif = next(k for k in g.nodes.values() if isinstance(k, ir.LIF))
    np.testing.assert_array_equal(lif.tau, np.full(3, 0.01, F32))


def test_facts_drive_every_direction():
    """Each neuron kind's torch layer, lowering and NIR rules come from its declaration."""
    from polyir.backends.lower import lower_rule
    from polyir.importers.nir import nir_rule
    from polyir.importers.torch import torch_rule
    for kind in ir.NEURONS.values():
        assert kind in lower_rule and kind in torch_rule and kind in nir_rule
        assert pnn.LAYERS[kind].kind is kind
        assert kind.state_names()[-1] == "v"
    assert {k for k in ir.NEURONS.values() if k.spike} == {ir.IF, ir.LIF, ir.CubaLIF}


def options_net(discretization):
    """Two spiking layers using every extension field, and an LI readout."""
    rng = np.random.default_rng(8)
    n_in, n, m = 6, 40, 3
    g = ir.Graph(metadata={"dt": 1e-3, "discretization": discretization})
    g.add("x", ir.Input((n_in,)))
    g.add("fc1", ir.Affine(rng.normal(0, 1, (n, n_in)).astype(F32), np.full(n, 0.5, F32)))
    g.add("lif", ir.LIF(rng.uniform(3e-3, 1e-2, n).astype(F32), np.full(n, 2.0, F32),
                        np.zeros(n, F32), np.full(n, 1.0, F32), reset_mode="subtract",
                        reset_delay=True, spike_rule="multi", threshold_compare=">="))
    g.add("fc2", ir.Linear(rng.normal(0.05, 0.3, (n, n)).astype(F32)))
    g.add("cuba", ir.CubaLIF(np.full(n, 2e-3, F32), np.full(n, 5e-3, F32), np.full(n, 3.0, F32),
                             np.zeros(n, F32), np.full(n, 1.0, F32), np.full(n, -0.05, F32),
                             spike_rule="multi", reset_delay=True))
    g.add("out", ir.Linear(rng.normal(0, 0.5, (m, n)).astype(F32)))
    g.add("li", ir.LI(np.full(m, 1e-2, F32), np.ones(m, F32), np.zeros(m, F32)))
    g.add("y", ir.Output((m,)))
    for e in [("x", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "cuba"), ("cuba", "out"),
              ("out", "li"), ("li", "y")]:
        g.connect(*e)
    return g


@pytest.mark.parametrize("discretization", ["euler", "exact"])
def test_extension_fields_alike_in_torch_c_and_the_cuda_kernel(tmp_path, discretization):
    """float32: C and the CUDA kernel (emulated on the host, and compiled by nvcc when present)
    apply the same coefficients in the same order as torch."""
    import shutil
    from test_backend_cuda import Emulated
    g = options_net(discretization)
    seq = np.random.default_rng(9).normal(1.0, 2.0, (30, 70, 6)).astype(F32)
    want = polyir.compile(g, "torch").run(seq)
    probe = ir.Graph(metadata=g.metadata)  # the same net with both spiking layers as outputs
    for name, node in g.nodes.items():
        probe.add(name, node)
    for e in g.edges:
        probe.connect(*e)
    for name in ("lif", "cuba"):
        probe.add(f"{name}_spikes", ir.Output((40,)))
        probe.connect(name, f"{name}_spikes")
    _, lif_spikes, cuba_spikes = polyir.compile(probe, "torch").run(seq)
    for spikes in (lif_spikes, cuba_spikes):  # some neurons spike several times in a step
        assert 0.01 < spikes.mean() < 2 and spikes.max() >= 2
    np.testing.assert_allclose(polyir.compile(g, "c").run(seq), want, rtol=1e-4, atol=1e-5)
    if shutil.which("g++"):
        got = Emulated(g, tmp_path, grid=1, block=4)(seq, steps=len(seq))[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    nvcc = shutil.which("nvcc")
    if nvcc:
        from polyir.backends import cuda
        src = tmp_path / "model.cu"
        src.write_text(cuda.codegen(g))
        r = subprocess.run([nvcc, "--ptx", "-arch=sm_90", "--std=c++17", str(src), "-o",
                            str(tmp_path / "model.ptx")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_extension_fields_at_nirs_defaults_keep_a_nir_file(tmp_path):
    nir = pytest.importorskip("nir")
    import h5py
    g = chain(ir.LIF(np.full(3, 0.01), np.ones(3), np.zeros(3), np.ones(3)), 3, dt=1e-3)
    path = tmp_path / "plain.h5"
    polyir.save(g, path)
    with h5py.File(path, "r") as f:
        assert set(f["node/nodes/neuron"]) == {"type", "tau", "r", "v_leak", "v_threshold",
                                               "v_reset"}
    assert type(nir.read(str(path)).nodes["neuron"]).__name__ == "LIF"
    assert polyir.from_nir(polyir.to_nir(g)) == g
    # a non-default field is stored, read back, and refused by to_nir by its name
    for field, value in (("reset_mode", "subtract"), ("reset_delay", True),
                         ("spike_rule", "multi"), ("threshold_compare", ">=")):
        node = ir.LIF(np.full(3, 0.01), np.ones(3), np.zeros(3), np.ones(3), **{field: value})
        g = chain(node, 3, dt=1e-3)
        path = tmp_path / f"{field}.h5"
        polyir.save(g, path)
        with h5py.File(path, "r") as f:
            assert field in f["node/nodes/neuron"]
        back = polyir.load(path)
        assert back == g and getattr(back.nodes["neuron"], field) == value
        with pytest.raises(polyir.GraphError, match=field) as err:
            polyir.to_nir(g)
        assert err.value.field == field and err.value.node == "neuron"
    with pytest.raises(polyir.GraphError, match="reset_mode") as err:
        ir.IF(np.ones(2), np.ones(2), reset_mode="zero")
    assert "subtract" in err.value.fix
    for mode in ("none", "subtract_pending_in_test"):  # no delayed form
        with pytest.raises(polyir.GraphError, match=mode) as err:
            ir.IF(np.ones(2), np.ones(2), reset_mode=mode, reset_delay=True)
        assert err.value.field == "reset_delay" and "reset_delay=False" in err.value.fix


def test_torch_layer_takes_the_extension_fields():
    """snnTorch's Leaky (beta = exp(-dt/tau) for the exact step, r = 1 - beta scaled input): the
    delayed subtracting reset, against the recurrence U[t+1] = beta U[t] + (1 - beta) I - S[t]."""
    tau, dt = 5e-3, 1e-3
    layer = pnn.LIF(torch.full((4,), tau, dtype=torch.float64), torch.ones(4, dtype=torch.float64),
                    torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64),
                    dt=dt, discretization="exact", reset_mode="subtract", reset_delay=True)
    beta = np.exp(-dt / tau)
    x = np.random.default_rng(2).uniform(0, 8, (40, 2, 4))
    u, want = np.zeros((2, 4)), []
    for t in range(len(x)):
        s_prev = (u > 1.0).astype(np.float64)
        u = beta * u + (1 - beta) * x[t] - s_prev
        want.append((u > 1.0).astype(np.float64))
    state, got = None, []
    with torch.no_grad():
        for t in range(len(x)):
            z, state = layer(torch.from_numpy(x[t]), state)
            got.append(z.numpy())
    assert np.stack(want).sum() > 10
    np.testing.assert_array_equal(np.stack(got), np.stack(want))
    exported = polyir.export(torch.nn.Sequential(layer), torch.zeros(2, 4, dtype=torch.float64))
    node = next(k for k in exported.nodes.values() if isinstance(k, ir.LIF))
    assert node.non_default_options() == {"reset_mode": "subtract", "reset_delay": True}


def test_snntorch_leaky_spike_for_spike():
    """snnTorch's Leaky (default: subtract, delayed reset; and reset to zero) is an exact-LIF with
    tau = -dt / ln(beta), r = 1 / (1 - beta) so that the input enters as I, v_leak 0."""
    snn = pytest.importorskip("snntorch")
    beta, dt, n = 0.8, 1.0, 6
    x = torch.from_numpy(np.random.default_rng(4).uniform(-0.2, 0.9, (60, 3, n)))
    tau = -dt / np.log(beta)
    for mechanism, mode in (("subtract", "subtract"), ("zero", "v_reset")):
        leaky = snn.Leaky(beta=beta, threshold=1.0, reset_mechanism=mechanism).double()
        mem, want = leaky.init_leaky(), []
        with torch.no_grad():
            for t in range(len(x)):
                spk, mem = leaky(x[t], mem)
                want.append(spk)
        want = torch.stack(want).numpy()
        node = ir.LIF(np.full(n, tau), np.full(n, 1 / (1 - beta)), np.zeros(n), np.ones(n),
                      reset_mode=mode, reset_delay=True)
        g = chain(node, n, dt=dt, discretization="exact")
        assert want.sum() > 20
        for backend in ("torch", "c"):
            np.testing.assert_array_equal(polyir.compile(g, backend).run(x.numpy()), want,
                                          err_msg=f"{mechanism} on {backend}")


def test_sinabs_iaf_multispike_spike_for_spike():
    """sinabs' IAF (MultiSpike, MembraneSubtract, threshold 1): an IF with r = 1 at dt = 1,
    several spikes per step, v >= threshold."""
    sl = pytest.importorskip("sinabs.layers")
    n = 5
    x = torch.from_numpy(np.random.default_rng(6).uniform(0, 2.5, (2, 50, n))).float()
    with torch.no_grad():
        want = sl.IAF()(x).numpy().transpose(1, 0, 2)  # sinabs is (batch, time, ...)
    node = ir.IF(np.ones(n, F32), np.ones(n, F32), reset_mode="subtract", spike_rule="multi",
                 threshold_compare=">=")
    g = chain(node, n, dt=1.0)
    assert want.max() >= 2
    for backend in ("torch", "c"):
        np.testing.assert_array_equal(polyir.compile(g, backend).run(x.numpy().transpose(1, 0, 2)),
                                      want, err_msg=backend)


def test_snntorch_rleaky_recurrent_bias_spike_for_spike():
    """snnTorch's RLeaky: U[t] = beta U[t-1] + I[t] + (W S[t-1] + b) - S_reset U_thr, with S[-1] = 0
    so the recurrent Linear's bias acts from the first step. The polyir graph: x -> lif, lif ->
    rec (Affine) -> lif, the recurrent edge delayed on the spikes."""
    snn = pytest.importorskip("snntorch")
    beta, n = 0.85, 5
    torch.manual_seed(3)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # snnTorch makes its thresholds in the default dtype
    try:
        rleaky = snn.RLeaky(beta=beta, linear_features=n)
        with torch.no_grad():
            rleaky.recurrent.weight.mul_(2.0)
            rleaky.recurrent.bias.copy_(torch.linspace(0.1, 0.4, n))
        x = torch.from_numpy(np.random.default_rng(12).uniform(-0.3, 0.5, (50, 2, n)))
        spk, mem, want = torch.zeros(2, n), torch.zeros(2, n), []
        with torch.no_grad():
            for t in range(len(x)):
                spk, mem = rleaky(x[t], spk.double(), mem)  # its spikes come back float32
                want.append(spk)
    finally:
        torch.set_default_dtype(default)
    want = torch.stack(want).numpy()
    g = ir.Graph(metadata={"dt": 1.0, "discretization": "exact"})
    g.add("x", ir.Input((n,)))
    g.add("lif", ir.LIF(np.full(n, -1.0 / np.log(beta)), np.full(n, 1 / (1 - beta)), np.zeros(n),
                        np.ones(n), reset_mode="subtract", reset_delay=True))
    g.add("rec", ir.Affine(rleaky.recurrent.weight.detach().numpy(),
                           rleaky.recurrent.bias.detach().numpy()))
    g.add("y", ir.Output((n,)))
    for e in [("x", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "y")]:
        g.connect(*e)
    assert 0 < want.sum() < want.size and want[0].sum() == 0
    for backend in ("torch", "c"):
        np.testing.assert_array_equal(polyir.compile(g, backend).run(x.numpy()), want,
                                      err_msg=backend)
