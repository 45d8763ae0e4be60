"""polyir.export straight from Norse's neurons (no NIR file): polyir's torch and C runs give
Norse's own spikes, step for step (cells) or over the whole sequence (time-loop modules inside
SequentialState or a model's forward); leaky integrators give Norse's membrane."""
import numpy as np
import pytest
import torch

import polyir
from snn_steps import N, N_IN, Net, compare, input_steps

norse = pytest.importorskip("norse.torch")
from norse.torch.functional import iaf, leaky_integrator, lif, lif_box, reset  # noqa: E402

T, B = 60, 4


def _lif_p(**kw):
    return lif.LIFParameters(**{k: torch.as_tensor(v) for k, v in kw.items()})


# name -> (cell, scale of the Linear feeding it): scales keep the spikes neither absent nor
# saturated (compare asserts it); 10 ms membranes at dt = 1 ms need large inputs
CELLS = {
    "lif_box": lambda: (norse.LIFBoxCell(), 60.0),
    "lif": lambda: (norse.LIFCell(), 60.0),
    # Norse starts the membrane at v_leak: the spikes of the first steps depend on it
    "lif_rest_and_reset_off_zero": lambda: (norse.LIFCell(_lif_p(
        v_leak=-0.5, v_th=0.5, v_reset=-0.8)), 60.0),
    "lif_per_neuron_triangle": lambda: (norse.LIFCell(lif.LIFParameters(
        tau_syn_inv=torch.tensor([100.0, 200.0, 300.0, 150.0]),
        tau_mem_inv=torch.tensor([50.0, 100.0, 80.0, 200.0]), method="triangle")), 60.0),
    "lif_box_subtract": lambda: (norse.LIFBoxCell(lif_box.LIFBoxParameters(
        reset_method=reset.reset_subtract)), 60.0),
    "iaf_from_v_reset": lambda: (norse.IAFCell(iaf.IAFParameters(
        v_th=torch.tensor(0.7), v_reset=torch.tensor(-0.3))), 0.3),
}


@pytest.mark.parametrize("case", sorted(CELLS))
def test_norse_cell(case):
    cell, scale = CELLS[case]()
    compare(cell, scale)


def _norse_steps(cell, drive):
    z, state, out = None, None, []
    for step in drive:
        z, state = cell(step, state)
        out.append(z)
    return torch.stack(out)


@pytest.mark.parametrize("autapses", [False, True])
def test_norse_recurrent_cell(autapses):
    torch.manual_seed(0)
    cell = norse.LIFRecurrentCell(N, 5, autapses=autapses)
    with torch.no_grad():
        cell.recurrent_weights.mul_(20.0)
    assert (cell.recurrent_weights.diagonal() == 0).all() != autapses
    g = compare(cell, 30.0)
    fc = torch.nn.Linear(N_IN, N).double()  # the recurrence matters: without it Norse differs
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 3, (T, B, N_IN)))
    with torch.no_grad():
        fc.weight.mul_(30.0), fc.bias.mul_(30.0)
        alone = cell.double()
        with_rec = _norse_steps(alone, fc(x))
        alone.recurrent_weights.zero_()
        assert not torch.equal(with_rec, _norse_steps(alone, fc(x)))
    assert sum(isinstance(n, polyir.ir.Linear) for n in g.nodes.values()) == 2


class _CellModel(torch.nn.Module):
    def __init__(self, fc, cell):
        super().__init__()
        self.fc, self.cell = fc, cell

    def forward(self, x):
        return self.cell(self.fc(x))[0]


def _membranes(cell, x):
    """Norse's membrane, cell called step by step, and polyir's torch and C runs."""
    torch.manual_seed(0)
    net = _CellModel(torch.nn.Linear(x.shape[-1], N), cell).double()
    with torch.no_grad():
        want = _norse_steps(net.cell, net.fc(x)).numpy()
    g = polyir.export(net, x[0])
    return want, {b: polyir.compile(g, b).run(x.numpy()) for b in ("torch", "c")}


LEAKY = {
    "li": lambda: norse.LICell(),
    "li_off_zero": lambda: norse.LICell(leaky_integrator.LIParameters(
        v_leak=torch.tensor([0.5, -1.0, 2.0, 0.0]), tau_syn_inv=torch.tensor(120.0))),
    "li_box_off_zero": lambda: norse.LIBoxCell(
        norse.LIBoxCell().p._replace(v_leak=torch.tensor(-0.7))),
    "li_linear": lambda: norse.LILinearCell(N, 3, leaky_integrator.LIParameters(
        v_leak=torch.tensor(0.25))),
}


@pytest.mark.parametrize("case", sorted(LEAKY))
def test_norse_leaky_integrator(case):
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 3, (T, B, N_IN)))
    want, got = _membranes(LEAKY[case](), x)
    assert want.std() > 0.1  # the membrane moves
    for backend, v in got.items():  # the same Euler step in another operation order
        np.testing.assert_allclose(v, want, rtol=1e-12, atol=1e-12, err_msg=backend)


def _sequence(net, x):
    """Norse's whole-sequence call against polyir's runs of the one-step export."""
    with torch.no_grad():
        want = net(x)
        want = (want[0] if isinstance(want, tuple) else want).numpy()
    g = polyir.export(net, x[0])  # one time step
    return want, {b: polyir.compile(g, b).run(x.numpy()) for b in ("torch", "c")}


def _linear(n_in, n_out, scale):
    fc = torch.nn.Linear(n_in, n_out)
    with torch.no_grad():
        fc.weight.mul_(scale)
    return fc


def test_norse_time_loop_modules_in_sequential_state():
    torch.manual_seed(0)
    p = _lif_p(v_leak=0.2, v_th=0.6)
    spiking = norse.SequentialState(_linear(N_IN, 6, 40.0), norse.LIF(p),
                                    norse.LIFRecurrent(6, 5), _linear(5, N, 2.0),
                                    norse.IAF()).double()
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 3, (T, B, N_IN)))
    want, got = _sequence(spiking, x)
    assert 20 < want.sum() < 0.9 * want.size
    for backend, z in got.items():
        np.testing.assert_array_equal(z, want, err_msg=backend)
    readout = norse.SequentialState(*list(spiking)[:4], norse.LI(
        leaky_integrator.LIParameters(v_leak=torch.tensor(0.3)))).double()
    want, got = _sequence(readout, x)
    assert want.std() > 0.1
    for backend, v in got.items():
        np.testing.assert_allclose(v, want, rtol=1e-12, atol=1e-12, err_msg=backend)


class _LiftedModel(torch.nn.Module):
    def __init__(self, fc, neuron):
        super().__init__()
        self.fc, self.neuron = fc, neuron

    def forward(self, x):
        z, _ = self.neuron(self.fc(x))
        return z


@pytest.mark.parametrize("form", ["lift", "time_loop"])
def test_norse_time_loop_in_a_model(form):
    torch.manual_seed(0)
    fc = _linear(N_IN, N, 60.0)
    if form == "lift":
        net = _LiftedModel(norse.Lift(fc), norse.Lift(norse.LIFBoxCell()))
    else:
        net = _LiftedModel(fc, norse.LIF())
    net = net.double()
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 3, (T, B, N_IN)))
    want, got = _sequence(net, x)
    assert 20 < want.sum() < 0.9 * want.size
    for backend, z in got.items():
        np.testing.assert_array_equal(z, want, err_msg=backend)


REFUSED = {
    "LIFAdExCell": (lambda: norse.LIFAdExCell(), "adaptation current"),
    "LSNNRecurrentCell": (lambda: norse.LSNNRecurrentCell(N, N), "adaptive threshold"),
    "LIFRefracCell": (lambda: norse.LIFRefracCell(), "refractory"),
    "IzhikevichCell": (lambda: norse.IzhikevichCell(
        __import__("norse.torch.functional.izhikevich", fromlist=["tonic_spiking"])
        .tonic_spiking), "quadratic membrane"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_norse_neurons_without_a_polyir_kind_are_refused(name):
    make, lacks = REFUSED[name]
    net = norse.SequentialState(torch.nn.Linear(N_IN, N), make())
    with pytest.raises(polyir.GraphError, match=f"Norse {name} has .*{lacks}") as err:
        polyir.export(net, torch.zeros(2, N_IN))
    assert "LIFCell" in err.value.fix
    polyir.export(norse.SequentialState(torch.nn.Linear(N_IN, N), norse.LIFCell()),
                  torch.zeros(2, N_IN))  # the fix: one of the neurons it names


def test_norse_options_without_a_polyir_form_are_refused():
    def custom_reset(z, v, v_reset, v_th):
        return v - z * (v - v_reset) / 2
    box = norse.LIFBoxCell(lif_box.LIFBoxParameters(reset_method=custom_reset))
    with pytest.raises(polyir.GraphError, match="custom_reset"):
        polyir.export(norse.SequentialState(torch.nn.Linear(N_IN, N), box), torch.ones(2, N_IN))
    subtract = norse.LIFBoxCell(lif_box.LIFBoxParameters(reset_method=reset.reset_subtract,
                                                         v_leak=torch.tensor(0.1)))
    with pytest.raises(polyir.GraphError, match="v_leak"):
        polyir.export(subtract, torch.ones(2, N))
    hidden = norse.SequentialState(torch.nn.Linear(N_IN, N), norse.LIF(), return_hidden=True)
    with pytest.raises(polyir.GraphError, match="return_hidden"):
        polyir.export(hidden, torch.ones(2, N_IN))
    # refused before the example run: Norse's own forward fails with it
    adjoint = norse.LIFCell(lif.LIFParameters(method="adjoint"))
    with pytest.raises(polyir.GraphError, match="method='adjoint'"):
        polyir.export(norse.Lift(adjoint), torch.ones(2, N))
    with pytest.raises(polyir.GraphError, match="Norse LIFExCell has .*exponential"):
        polyir.export(norse.LIFExCell(), torch.ones(2, N))  # outside any container too
    inside = norse.LIBoxCell(norse.LIBoxCell().p._replace(v_leak=torch.tensor([[0.0, 1.0]])))
    with pytest.raises(polyir.GraphError, match="varies inside a channel"):
        polyir.export(inside, torch.ones(2, 1, 2))


def test_norse_nir_file_loses_what_direct_export_keeps():
    """Norse's NIR writer drops v_reset: the file's spikes differ from Norse's where the direct
    export's do not."""
    cell = norse.LIFBoxCell(lif_box.LIFBoxParameters(
        v_leak=torch.tensor(-0.5), v_th=torch.tensor(0.5), v_reset=torch.tensor(-0.8)))
    g, want = compare(cell, 60.0, return_spikes=True)
    fc = Net(cell, 60.0).fc.float()
    nir_graph = norse.to_nir(norse.SequentialState(fc, cell.float()), torch.zeros(N_IN))
    from_file = polyir.compile(polyir.from_nir(nir_graph, convention="norse"), "torch")
    x = input_steps().float()
    assert (from_file.run(x.numpy()) != want).sum() > 10
    direct = polyir.export(Net(cell, 60.0).float(), x[0])  # float32 too: not a rounding matter
    np.testing.assert_array_equal(polyir.compile(direct, "torch").run(x.numpy()), want)
