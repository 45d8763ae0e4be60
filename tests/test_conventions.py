"""NIR files written by snnTorch, Norse, sinabs and rockpool, read with `convention=`: polyir's torch and C
runs give the library's own spikes, step for step; without the convention the file reads as NIR
defines it."""
import numpy as np
import pytest
import torch

import polyir
from polyir.ir.kinds.neurons import SpikingNeuron

N_IN, N = 3, 4


def _linear(scale):
    torch.manual_seed(0)
    lin = torch.nn.Linear(N_IN, N)
    with torch.no_grad():
        lin.weight.mul_(scale)
        lin.bias.mul_(scale)
    return lin


def _float64_copy(lin):
    twin = torch.nn.Linear(N_IN, N).double()
    twin.load_state_dict(lin.state_dict())
    return twin


def _inputs(steps=80, batch=4):
    return np.random.default_rng(1).uniform(0, 3, (steps, batch, N_IN))


def _library_spikes(lin, neuron, x, state=()):
    """The library's own loop: float64 copies of the linear layer and the neuron, one call a
    step, `spikes, *state = neuron(current, *state)`."""
    lin64, neuron, want = _float64_copy(lin), neuron.double(), []
    with torch.no_grad():
        for t in range(len(x)):
            spk, *state = neuron(lin64(torch.from_numpy(x[t])), *state)
            want.append(spk.numpy())
    return np.stack(want)


def _check(nir_graph, convention, x, want, backends):
    assert want.sum() > 20  # enough spikes that a wrong step would show
    g = polyir.from_nir(nir_graph, convention=convention)
    assert g.metadata["convention"] == convention
    for backend in backends:
        options = {"dtype": torch.float64} if backend == "torch" else {}
        got = polyir.compile(g, backend, **options).run(x)
        np.testing.assert_array_equal(got, want, err_msg=f"{convention} on {backend}")
    plain = polyir.from_nir(nir_graph, check=False)  # sinabs' (time, n) Input fails the check
    assert "convention" not in plain.metadata
    assert all(node.non_default_options() == {} for node in plain.nodes.values()
               if isinstance(node, SpikingNeuron))


@pytest.mark.parametrize("cell", ["Leaky", "Synaptic"])
def test_snntorch_file(cell):
    snn = pytest.importorskip("snntorch")
    from snntorch.export_nir import export_to_nir
    kind = getattr(snn, cell)
    params = {"beta": torch.full((N,), 0.8), "threshold": torch.ones(N)}
    if cell == "Synaptic":
        params["alpha"] = torch.full((N,), 0.7)
    lin = _linear(1.0)
    nir_graph = export_to_nir(torch.nn.Sequential(lin, kind(**params, init_hidden=True)),
                              torch.zeros(N_IN))
    x = _inputs()
    want = _library_spikes(lin, kind(**params), x)
    _check(nir_graph, "snntorch", x, want, ("torch", "c") if cell == "Leaky" else ("torch",))


def test_snntorch_recurrent_file():
    """RLeaky's NIR file is a nested graph (LIF with a recurrent Affine): the convention reaches
    the inner LIF. float32 throughout (RLeaky keeps float32 spikes inside, whatever .double())."""
    snn = pytest.importorskip("snntorch")
    from snntorch.export_nir import export_to_nir
    params = {"beta": torch.full((N,), 0.8), "threshold": torch.ones(N), "linear_features": N}
    lin, hidden = _linear(3.0), snn.RLeaky(**params, init_hidden=True)
    nir_graph = export_to_nir(torch.nn.Sequential(lin, hidden), torch.zeros(N_IN))
    neuron = snn.RLeaky(**params)
    neuron.recurrent.load_state_dict(hidden.recurrent.state_dict())
    x = _inputs().astype(np.float32)
    spk, mem, want = None, None, []
    with torch.no_grad():
        for t in range(len(x)):
            current = lin(torch.from_numpy(x[t]))
            spk, mem = neuron(current) if spk is None else neuron(current, spk, mem)
            want.append(spk.numpy())
    assert np.stack(want).sum() > 20
    g = polyir.from_nir(nir_graph, convention="snntorch")
    for backend in ("torch", "c"):
        np.testing.assert_array_equal(polyir.compile(g, backend).run(x), np.stack(want),
                                      err_msg=backend)


@pytest.mark.parametrize("cell", ["LIFBoxCell", "LIFCell"])
def test_norse_file(cell):
    norse = pytest.importorskip("norse.torch")
    kind = getattr(norse, cell)
    lin = _linear(60.0)  # Norse's default tau_mem is 10 ms at dt = 1 ms: inputs must be large
    nir_graph = norse.to_nir(norse.SequentialState(lin, kind()), torch.zeros(N_IN))
    x = _inputs()
    want = _library_spikes(lin, kind(), x, (None,))
    _check(nir_graph, "norse", x, want, ("torch", "c") if cell == "LIFCell" else ("torch",))


@pytest.mark.parametrize("cell", ["LIFBoxCell", "LIFCell"])
def test_norse_file_starts_the_membrane_at_v_leak(cell):
    """Norse starts a membrane at v_leak (here below rest 0 by 0.6): its first spikes come
    later than from 0. The convention reads the file so; the plain NIR reading starts at 0."""
    norse = pytest.importorskip("norse.torch")
    from norse.torch.functional import lif, lif_box
    params = lif_box.LIFBoxParameters if cell == "LIFBoxCell" else lif.LIFParameters
    p = params(v_leak=torch.tensor(-0.6), v_th=torch.tensor(0.4))  # v_reset: 0, all a file has
    kind = getattr(norse, cell)
    lin = _linear(60.0)
    nir_graph = norse.to_nir(norse.SequentialState(lin, kind(p)), torch.zeros(N_IN))
    x = _inputs()
    want = _library_spikes(lin, kind(p), x, (None,))
    _check(nir_graph, "norse", x, want, ("torch", "c"))
    # the same neuron started at 0 (NIR's start, Norse's time constants) spikes otherwise
    g = polyir.from_nir(nir_graph, convention="norse")
    name, neuron = next((n, k) for n, k in g.nodes.items() if isinstance(k, SpikingNeuron))
    g.nodes[name] = neuron.replace(v_leak=np.full_like(neuron.v_leak, -0.6),
                                   v_threshold=np.full_like(neuron.v_threshold, 0.4),
                                   v_reset=np.zeros_like(neuron.v_reset))
    assert (polyir.compile(g, "torch").run(x) != want).sum() > 0


def test_norse_leaky_integrator_file_away_from_rest_zero_is_refused():
    norse = pytest.importorskip("norse.torch")
    from norse.torch.functional import leaky_integrator_box
    cell = norse.LIBoxCell(leaky_integrator_box.LIBoxParameters(v_leak=torch.tensor(0.5)))
    nir_graph = norse.to_nir(norse.SequentialState(_linear(1.0), cell), torch.zeros(N_IN))
    with pytest.raises(polyir.GraphError, match="v_leak") as err:
        polyir.from_nir(nir_graph, convention="norse")
    assert "polyir.export" in err.value.fix
    polyir.from_nir(nir_graph)  # NIR's own reading: from 0


@pytest.mark.parametrize("layer", ["IAF", "LIF"])
def test_sinabs_file(layer):
    sinabs = pytest.importorskip("sinabs")
    import sinabs.layers as sl
    neuron = sl.IAF() if layer == "IAF" else sl.LIF(tau_mem=5.0)
    model = torch.nn.Sequential(_linear(3.0 if layer == "IAF" else 12.0), neuron)
    steps = 50
    nir_graph = sinabs.to_nir(model, torch.zeros(2, steps, N_IN))  # (batch, time, features)
    x = _inputs(steps).astype(np.float32)
    neuron.reset_states()
    with torch.no_grad():
        want = model(torch.from_numpy(x.transpose(1, 0, 2))).numpy().transpose(1, 0, 2)
    assert want.max() >= 2  # several spikes in one step happen
    _check(nir_graph, "sinabs", x, want, ("torch", "c") if layer == "IAF" else ("torch",))


def test_rockpool_file():
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch, to_nir
    torch.manual_seed(0)
    model = Sequential(LinearTorch((N_IN, N)), LIFTorch(N, tau_mem=[0.01, 0.02, 0.005, 0.05],
                                                          tau_syn=0.005))
    x = _inputs(50, 2).astype(np.float32)
    with torch.no_grad():  # rockpool evolves (batch, time, features) in one call
        want = model(torch.from_numpy(x.transpose(1, 0, 2)))[0].numpy().transpose(1, 0, 2)
    assert want.max() >= 2  # several spikes in one step happen
    _check(to_nir(model), "rockpool", x, want, ("torch", "c"))


def test_rockpool_neuron_without_a_tested_reading_is_refused():
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFNeuronTorch, LinearTorch, to_nir
    nir_graph = to_nir(Sequential(LinearTorch((N_IN, N)), LIFNeuronTorch(N)))
    with pytest.raises(polyir.GraphError, match="LIFTorch"):
        polyir.from_nir(nir_graph, convention="rockpool")


def test_unknown_convention_names_the_known_ones(tmp_path):
    nir = pytest.importorskip("nir")
    node = nir.LIF(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2))
    with pytest.raises(polyir.GraphError, match="snntorch"):
        polyir.from_nir(node, convention="snntorc")
    with pytest.raises(polyir.GraphError, match="norse"):
        polyir.load(tmp_path / "missing.nir", convention="nengo")


def test_nir_file_on_disk_load_and_convert(tmp_path):
    """The same convention through polyir.load and `polyir convert --convention`: Norse's
    LIFBoxCell() default tau_mem_inv = 100/s is a 10 ms time constant."""
    nir = pytest.importorskip("nir")
    norse = pytest.importorskip("norse.torch")
    from polyir.cli.main import main
    path, out = tmp_path / "norse.nir", tmp_path / "norse.h5"
    model = norse.SequentialState(_linear(1.0), norse.LIFBoxCell())
    # no compression: NIR's writer cannot filter the 0-d arrays of Norse's default parameters
    nir.write(str(path), norse.to_nir(model, torch.zeros(N_IN)), compression=None)
    assert main(["convert", "--convention", "norse", str(path), str(out)]) == 0
    for g in (polyir.load(path, convention="norse"), polyir.load(out)):
        lif = g.nodes["1"]
        np.testing.assert_allclose(lif.tau, 1 / 100.0, rtol=1e-6)
        assert (g.metadata["dt"], g.metadata["discretization"]) == (1e-3, "euler")
    np.testing.assert_allclose(polyir.load(path).nodes["1"].tau, 1e-3 / 100.0, rtol=1e-6)
