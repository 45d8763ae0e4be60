"""polyir.export straight from snnTorch's neurons (no NIR file): polyir's torch and C runs give
snnTorch's own spikes, step for step."""
import numpy as np
import pytest
import torch

import polyir
from snn_steps import N, N_IN, Net, compare, input_steps


@pytest.mark.parametrize("reset, delay", [("subtract", True), ("zero", True), ("zero", False)])
def test_snntorch_leaky(reset, delay):
    snn = pytest.importorskip("snntorch")
    compare(snn.Leaky(beta=torch.tensor([0.8, 0.7, 0.9, 0.6]), reset_mechanism=reset,
                       reset_delay=delay), 1.0)


def test_snntorch_leaky_without_leak_is_integrate_and_fire():
    snn = pytest.importorskip("snntorch")
    g = compare(snn.Leaky(beta=1.0), 0.3)
    assert any(isinstance(k, polyir.IF) for k in g.nodes.values())


def test_snntorch_synaptic():
    snn = pytest.importorskip("snntorch")
    compare(snn.Synaptic(alpha=torch.tensor([0.7, 0.5, 0.9, 0.6]),
                          beta=torch.tensor([0.8, 0.7, 0.9, 0.6])), 1.0, n_states=2)


def test_snntorch_synaptic_unpacked_into_three_values():
    snn = pytest.importorskip("snntorch")
    compare(snn.Synaptic(alpha=0.6, beta=0.8), 1.0, n_states=2, unpack=True)


def _spike(mem_shift):
    """snnTorch's forward spike (mem - threshold > 0) in the membrane's dtype: its surrogates
    return float32, which its recurrent layers cannot multiply with float64 weights."""
    return (mem_shift > 0).to(mem_shift.dtype)


def _recurrent_weights(cell, scale=0.5):
    torch.manual_seed(2)
    with torch.no_grad():
        for p in cell.recurrent.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return cell


def test_snntorch_rleaky_linear():
    snn = pytest.importorskip("snntorch")
    cell = _recurrent_weights(snn.RLeaky(beta=torch.tensor([0.8, 0.7, 0.9, 0.6]),
                                         linear_features=N, spike_grad=_spike))
    g = compare(cell, 1.0, n_states=2)
    assert sum(isinstance(k, polyir.Affine) for k in g.nodes.values()) == 2  # fc, recurrent


def test_snntorch_rleaky_one_to_one():
    snn = pytest.importorskip("snntorch")
    compare(snn.RLeaky(beta=0.8, all_to_all=False, V=torch.tensor([0.5, -0.7, 0.3, -1.0]),
                        spike_grad=_spike),
             1.0, n_states=2)


def test_snntorch_rleaky_conv2d():
    snn = pytest.importorskip("snntorch")
    cell = _recurrent_weights(snn.RLeaky(beta=0.7, conv2d_channels=2, kernel_size=3,
                                         spike_grad=_spike), 0.3)
    compare(cell, 1.0, n_states=2, layer=torch.nn.Conv2d(1, 2, 3, padding=1), shape=(1, 4, 4))


def test_snntorch_rsynaptic_linear():
    snn = pytest.importorskip("snntorch")
    cell = _recurrent_weights(snn.RSynaptic(alpha=torch.tensor([0.7, 0.5, 0.9, 0.6]), beta=0.8,
                                            linear_features=N, spike_grad=_spike))
    compare(cell, 0.5, n_states=3)


@pytest.mark.parametrize("cls, delay", [("Synaptic", True), ("RLeaky", True),
                                        ("RSynaptic", True), ("Synaptic", False),
                                        ("RLeaky", False)])
def test_snntorch_zero_reset(cls, delay):
    """Synaptic, RLeaky and RSynaptic zero the membrane after the update of the step after a
    spike (reset_mode 'v_reset_after_update'); with reset_delay=False right at the spike.
    (snnTorch 1.0's own RSynaptic forward fails with reset_delay=False: nothing to compare.)"""
    snn = pytest.importorskip("snntorch")
    extra = {"alpha": torch.tensor([0.7, 0.5, 0.9, 0.6])} if "Synaptic" in cls else {}
    if cls.startswith("R"):
        extra.update(linear_features=N, spike_grad=_spike)
    cell = getattr(snn, cls)(beta=torch.tensor([0.8, 0.7, 0.9, 0.6]), reset_mechanism="zero",
                             reset_delay=delay, **extra)
    if cls.startswith("R"):
        _recurrent_weights(cell)
    n_states = 1 + ("Synaptic" in cls) + cls.startswith("R")
    g = compare(cell, 1.0, n_states=n_states)
    modes = {k.reset_mode for k in g.nodes.values() if hasattr(k, "reset_mode")}
    assert modes == {"v_reset_after_update" if delay else "v_reset"}


def _snntorch_cell(snn, cls, **options):
    extra = {"alpha": torch.tensor([0.7, 0.5, 0.9, 0.6])} if "Synaptic" in cls else {}
    if cls.startswith("R"):
        extra.update(linear_features=N, spike_grad=_spike)
    cell = getattr(snn, cls)(beta=torch.tensor([0.8, 0.7, 0.9, 0.6]), **options, **extra)
    if cls.startswith("R"):
        _recurrent_weights(cell)
    return cell, 1 + ("Synaptic" in cls) + cls.startswith("R")


@pytest.mark.parametrize("cls", ["Leaky", "Synaptic", "RLeaky", "RSynaptic"])
def test_snntorch_no_reset(cls):
    """reset_mechanism='none': spikes while the membrane stays above threshold, never reset."""
    snn = pytest.importorskip("snntorch")
    cell, n_states = _snntorch_cell(snn, cls, reset_mechanism="none")
    g = compare(cell, 0.3, n_states=n_states)
    modes = {(k.reset_mode, k.reset_delay) for k in g.nodes.values() if hasattr(k, "reset_mode")}
    assert modes == {("none", False)}


def _plain_immediate_subtract(cell, scale, x):
    """numpy: the spikes of the same Linear and neuron if the spike test saw only the stored
    membrane (mem - thr after each spike, no pending reset): what snnTorch's reset_delay=False
    does NOT compute."""
    fc = Net(cell, scale).fc
    with torch.no_grad():
        drive = fc(x).numpy()
    beta = cell.beta.detach().double().numpy()
    alpha = cell.alpha.detach().double().numpy() if hasattr(cell, "alpha") else None
    syn = mem = np.zeros(drive.shape[1:])
    spikes = []
    for t in range(len(drive)):
        syn = drive[t] if alpha is None else alpha * syn + drive[t]
        mem = beta * mem + syn
        spikes.append((mem > 1.0).astype(np.float64))
        mem = mem - spikes[-1]
    return np.stack(spikes)


@pytest.mark.parametrize("cls", ["Leaky", "Synaptic", "RLeaky"])
def test_snntorch_immediate_subtract(cls):
    """reset_delay=False with reset_mechanism='subtract': the spike test also subtracts the
    previous step's spike (reset_mode 'subtract_pending_in_test')."""
    snn = pytest.importorskip("snntorch")
    if cls == "Leaky":  # a membrane of 1.5 after the first reset does not spike again
        plain = snn.Leaky(beta=1.0, reset_delay=False)
        assert [plain(torch.tensor([v]))[0].item() for v in (2.5, 0.0)] == [1.0, 0.0]
    cell, n_states = _snntorch_cell(snn, cls, reset_delay=False)
    # input scales at which the pending spike changes many of the library's spike tests
    scale = 0.3 if cls == "Synaptic" else 2.0
    if cls != "RLeaky":
        naive = _plain_immediate_subtract(cell, scale, input_steps())
    g, want = compare(cell, scale, n_states=n_states, return_spikes=True)
    if cls != "RLeaky":
        assert (naive != want).sum() >= 10
    modes = {(k.reset_mode, k.reset_delay) for k in g.nodes.values() if hasattr(k, "reset_mode")}
    assert modes == {("subtract_pending_in_test", False)}


def test_snntorch_rsynaptic_without_reset_delay_is_refused_naming_the_option():
    """snnTorch 1.0's own RSynaptic(reset_delay=False) fails on cell(x): the refusal names the
    option (not the example input)."""
    snn = pytest.importorskip("snntorch")
    cell, _ = _snntorch_cell(snn, "RSynaptic", reset_delay=False)
    net = Net(cell, 1.0)
    with pytest.raises(TypeError):  # the library's own forward
        net(torch.zeros(2, N_IN, dtype=torch.float64))
    with pytest.raises(polyir.GraphError, match="reset_delay") as err:
        polyir.export(net, torch.zeros(2, N_IN, dtype=torch.float64))
    assert "reset_delay=True" in err.value.fix
    cell.reset_delay = True  # the fix the error gives exports
    polyir.export(net, torch.zeros(2, N_IN, dtype=torch.float64))


@pytest.mark.parametrize("options, scale", [
    ({"beta": 0.9}, 10.0),
    ({"R": 2.0, "C": 4.0, "time_step": 0.5, "reset_mechanism": "zero"}, 10.0),
    ({"R": 3.0, "beta": 0.8, "time_step": 0.25, "threshold": torch.tensor([1.0, 0.5, 2.0, 1.5])},
     3.0),
    ({"C": 1.5, "beta": 0.7, "reset_mechanism": "none"}, 1.0),
], ids=["beta", "rc_zero", "r_thresholds", "c_no_reset"])
def test_snntorch_lapicque(options, scale):
    """Lapicque: mem <- (1 - dt/(RC)) mem + x dt/C at dt = time_step, a LIF with tau = RC, r = R
    at that dt."""
    snn = pytest.importorskip("snntorch")
    cell = snn.Lapicque(**options)
    g = compare(cell, scale)
    (lif,) = [k for k in g.nodes.values() if isinstance(k, polyir.LIF)]
    np.testing.assert_allclose(lif.tau, np.full(N, float(cell.R * cell.C)), rtol=1e-12)
    assert g.metadata["dt"] == float(cell.time_step)


def test_snntorch_neurons_without_a_kind_are_refused_by_name():
    snn = pytest.importorskip("snntorch")
    net = Net(snn.Alpha(alpha=0.9, beta=0.8), 1.0)
    with pytest.raises(polyir.GraphError, match="snntorch's Alpha has no polyir kind") as err:
        polyir.export(net, torch.zeros(2, N_IN, dtype=torch.float64))
    assert "Synaptic" in err.value.fix and "cannot trace" not in str(err.value)


def test_snntorch_hidden_state_is_refused_with_the_fix():
    snn = pytest.importorskip("snntorch")
    net = torch.nn.Sequential(torch.nn.Linear(N_IN, N), snn.Leaky(beta=0.8, init_hidden=True))
    with pytest.raises(polyir.GraphError, match="init_hidden=True keeps its membrane"):
        polyir.export(net, torch.zeros(2, N_IN, dtype=next(net.parameters()).dtype))


def test_snntorch_synaptic_one_step_model_threads_its_own_state():
    """forward(x, state) -> (spikes, (syn, mem)): the exporter follows syn and mem back into the
    cell that returned them."""
    snn = pytest.importorskip("snntorch")

    class OneStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(N_IN, N)
            self.cell = snn.Synaptic(alpha=0.6, beta=0.8)

        def forward(self, x, state=None):
            if state is None:
                state = (None, None)
            syn, mem = state
            spk, syn, mem = self.cell(self.fc(x), syn, mem)
            return spk, (syn, mem)

    net = OneStep().double()
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 3, (60, 4, N_IN)))
    state, want = None, []
    with torch.no_grad():
        for t in range(len(x)):
            z, state = net(x[t], state)
            want.append(z.numpy())
    want = np.stack(want)
    assert 20 < want.sum() < 0.9 * want.size
    g = polyir.export(net, x[0])
    np.testing.assert_array_equal(polyir.compile(g, "torch").run(x.numpy()), want)
