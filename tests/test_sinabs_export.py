"""polyir.export straight from sinabs' layers (no NIR file): polyir's torch and C runs give
sinabs' own spikes, step for step."""
import numpy as np
import pytest
import torch

import polyir
from snn_steps import N, N_IN


def _positive_linear():
    torch.manual_seed(0)
    fc = torch.nn.Linear(N_IN, N)
    with torch.no_grad():
        fc.weight.uniform_(0, 1)
        fc.bias.uniform_(-0.2, 0.2)
    return fc


# sinabs layers take the whole (batch, time, ...) sequence per call and keep their state inside;
# the exported graph is one time step, so polyir runs the sequence time first.
SINABS_CASES = {
    "iaf_multi": lambda sl, act: sl.IAF(),
    "lif_single_reset": lambda sl, act: sl.LIF(tau_mem=torch.tensor([3.0, 5.0, 8.0, 20.0]),
                                               spike_fn=act.SingleSpike,
                                               reset_fn=act.MembraneReset()),
    "lif_synaptic_unnormed_multi": lambda sl, act: sl.LIF(tau_mem=6.0, tau_syn=3.0,
                                                          norm_input=False),
    "lif_train_alphas": lambda sl, act: sl.LIF(tau_mem=4.0, train_alphas=True),
    "iaf_max_spike_2_multi": lambda sl, act: sl.IAF(spike_fn=act.MaxSpike(2)),
    "iaf_synaptic_multi": lambda sl, act: sl.IAF(tau_syn=3.0),
    # a threshold per neuron; recording and the surrogate gradient leave the spikes alone
    "iaf_threshold_per_neuron_multi": lambda sl, act: sl.IAF(
        spike_threshold=torch.tensor([0.5, 1.0, 1.5, 2.0]), record_states=True),
    "lif_recorded_periodic_surrogate_multi": lambda sl, act: sl.LIF(
        tau_mem=5.0, norm_input=False, record_states=True,
        surrogate_grad_fn=act.PeriodicExponential()),
    # ALIF without adaptation is LIF; its norm_input scales the stored synaptic current itself
    "alif_no_adaptation_synaptic_single": lambda sl, act: sl.ALIF(
        tau_mem=4.0, tau_adapt=10.0, tau_syn=3.0, adapt_scale=0.0),
}


@pytest.mark.parametrize("case", sorted(SINABS_CASES))
def test_sinabs_layer(case):
    sl = pytest.importorskip("sinabs.layers")
    act = pytest.importorskip("sinabs.activation")
    net = torch.nn.Sequential(_positive_linear(), SINABS_CASES[case](sl, act)).double()
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 2, (4, 60, N_IN)))  # (B, T, N_IN)
    with torch.no_grad():
        want = net(x).numpy()  # sinabs' own loop over the time axis
    assert 20 < want.sum() < 0.9 * want.size * want.max()
    assert np.any(want > 1) == case.endswith("multi")
    if "max_spike_2" in case:  # the cap binds: the uncapped IAF spikes more often than twice
        assert want.max() == 2
        uncapped = sl.IAF().double()
        with torch.no_grad():
            assert uncapped(net[0](x)).max() > 2
    g = polyir.export(net, x[:, 0])  # one time step
    for backend in ("torch", "c"):
        got = polyir.compile(g, backend).run(x.transpose(0, 1).numpy())
        np.testing.assert_array_equal(got.transpose(1, 0, 2), want, err_msg=backend)


def _dyadic(layer, seed):
    """Weights k/8: sinabs runs rec_connect in float32 (its spikes are float32), so the
    recurrent sums must be exact in float32 to compare spike for spike with float64."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randint(-6, 5, layer.weight.shape, generator=gen) / 8)
    return layer


def _run_both(net, x):
    """sinabs' spikes of (B, T, ...) input and polyir's torch and C runs of the exported step."""
    with torch.no_grad():
        want = net(x).numpy()
    g = polyir.export(net, x[:, 0])
    got = {b: np.swapaxes(polyir.compile(g, b).run(np.swapaxes(x.numpy(), 0, 1)), 0, 1)
           for b in ("torch", "c")}
    return want, got


# (input layer, recurrent layer, input shape per step); a layer on (B, T, C, H, W) input is fed
# directly (torch's Conv2d takes no time axis)
RECURRENT_CASES = {
    "iaf_linear": lambda sl, act: (_positive_linear(), sl.IAFRecurrent(
        rec_connect=_dyadic(torch.nn.Linear(N, N, bias=False), 1)), (N_IN,)),
    "iaf_synaptic_linear": lambda sl, act: (_positive_linear(), sl.IAFRecurrent(
        tau_syn=2.0, rec_connect=_dyadic(torch.nn.Linear(N, N, bias=False), 6)), (N_IN,)),
    "lif_synaptic_sequential_single_reset": lambda sl, act: (_positive_linear(), sl.LIFRecurrent(
        tau_mem=torch.tensor([3.0, 5.0, 8.0, 20.0]), tau_syn=2.0, spike_fn=act.SingleSpike,
        reset_fn=act.MembraneReset(), rec_connect=torch.nn.Sequential(
            _dyadic(torch.nn.Linear(N, N, bias=False), 2), torch.nn.ReLU())), (N_IN,)),
    "lif_conv_unnormed": lambda sl, act: (torch.nn.Identity(), sl.LIFRecurrent(
        tau_mem=4.0, norm_input=False, rec_connect=_dyadic(
            torch.nn.Conv2d(2, 2, 3, padding=1, bias=False), 3)), (2, 4, 4)),
    "alif_no_adaptation": lambda sl, act: (_positive_linear(), sl.ALIFRecurrent(
        tau_mem=4.0, tau_adapt=10.0, adapt_scale=0.0,
        rec_connect=_dyadic(torch.nn.Linear(N, N, bias=False), 4)), (N_IN,)),
}


@pytest.mark.parametrize("case", sorted(RECURRENT_CASES))
def test_sinabs_recurrent_layer(case):
    sl = pytest.importorskip("sinabs.layers")
    act = pytest.importorskip("sinabs.activation")
    first, layer, shape = RECURRENT_CASES[case](sl, act)
    net = torch.nn.Sequential(first, layer).double()
    layer.rec_connect.float()  # sinabs feeds its float32 spikes to rec_connect
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 2, (3, 50, *shape)))
    want, got = _run_both(net, x)
    assert 20 < want.sum() < 0.9 * want.size * want.max()
    for backend, spikes in got.items():
        np.testing.assert_array_equal(spikes, want, err_msg=backend)
    with torch.no_grad():  # the recurrence matters: without it sinabs spikes otherwise
        for p in layer.rec_connect.parameters():
            p.zero_()
        assert not np.array_equal(net(x).numpy(), want)


def test_sinabs_recurrent_refusals_name_rec_connect():
    sl = pytest.importorskip("sinabs.layers")
    x = torch.zeros(2, N_IN)
    for rec, reason in ((torch.nn.Linear(N, N), "bias"),
                        (torch.nn.Sequential(torch.nn.Linear(N, N, bias=False),
                                             torch.nn.Softsign()), "does not export")):
        net = torch.nn.Sequential(torch.nn.Linear(N_IN, N), sl.LIFRecurrent(
            tau_mem=3.0, rec_connect=rec))
        with pytest.raises(polyir.GraphError, match=reason) as info:
            polyir.export(net, x)
        assert info.value.field == "rec_connect"
    # sinabs reshapes rec_connect's output to the neuron shape; polyir has no reshape
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 8, bias=False),
                               torch.nn.ReLU())
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), sl.IAFRecurrent(rec_connect=flat))
    with pytest.raises(polyir.GraphError, match="reshape"):
        polyir.export(net, torch.zeros(2, 2, 2, 2))


def test_sinabs_exp_leak_gives_the_membrane():
    sl = pytest.importorskip("sinabs.layers")
    for layer in (sl.ExpLeak(tau_mem=torch.tensor([3.0, 5.0, 8.0, 20.0])),
                  sl.ExpLeak(tau_mem=6.0, norm_input=True, train_alphas=True)):
        net = torch.nn.Sequential(_positive_linear(), layer).double()
        x = torch.from_numpy(np.random.default_rng(1).uniform(0, 2, (4, 40, N_IN)))
        want, got = _run_both(net, x)
        assert np.ptp(want) > 0.5  # a membrane that moves, not spikes
        for backend, v in got.items():  # a real output: the two step formulas round alike
            np.testing.assert_allclose(v, want, rtol=1e-13, atol=1e-14, err_msg=backend)


def test_sinabs_exp_leak_squeeze_runs_on_batch_times_time():
    sl = pytest.importorskip("sinabs.layers")
    b, t = 3, 20  # given as num_timesteps: the example batch b is no multiple of t
    net = torch.nn.Sequential(_positive_linear(), sl.ExpLeakSqueeze(tau_mem=4.0, num_timesteps=t))
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 2, (b * t, N_IN)))
    with torch.no_grad():
        want = net.double()(x).numpy().reshape(b, t, N)
    g = polyir.export(net, x[:b])
    got = polyir.compile(g, "torch").run(x.reshape(b, t, N_IN).transpose(0, 1).numpy())
    np.testing.assert_allclose(got.transpose(1, 0, 2), want, rtol=1e-13, atol=1e-14)


def test_sinabs_adaptive_threshold_is_refused_with_a_fix_that_exports():
    sl = pytest.importorskip("sinabs.layers")
    x = torch.zeros(2, N_IN)
    for make in (lambda s: sl.ALIF(tau_mem=4.0, tau_adapt=10.0, adapt_scale=s),
                 lambda s: sl.ALIFRecurrent(tau_mem=4.0, tau_adapt=10.0, adapt_scale=s,
                                            rec_connect=torch.nn.Linear(N, N, bias=False))):
        with pytest.raises(polyir.GraphError, match="fixed threshold") as info:
            polyir.export(torch.nn.Sequential(torch.nn.Linear(N_IN, N), make(1.8)), x)
        assert info.value.field == "adapt_scale" and "LIF" in info.value.fix
        g = polyir.export(torch.nn.Sequential(torch.nn.Linear(N_IN, N), make(0.0)), x)
        assert any(isinstance(k, (polyir.LIF, polyir.CubaLIF)) for k in g.nodes.values())


def test_sinabs_export_leaves_the_layers_state():
    sl = pytest.importorskip("sinabs.layers")
    net = torch.nn.Sequential(_positive_linear(), sl.LIF(tau_mem=5.0)).double()
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 2, (4, 10, N_IN)))
    with torch.no_grad():
        net(x)
    before = net[1].v_mem.clone()
    polyir.export(net, x[:, 0])
    assert torch.equal(net[1].v_mem, before) and before.abs().sum() > 0


def test_sinabs_squeeze_layer_runs_on_batch_times_time():
    sl = pytest.importorskip("sinabs.layers")
    b, t = 4, 30
    net = torch.nn.Sequential(_positive_linear(), sl.LIFSqueeze(tau_mem=5.0, batch_size=b))
    net = net.double()
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 2, (b * t, N_IN)))  # (B*T, N_IN)
    with torch.no_grad():
        want = net(x).numpy().reshape(b, t, N)
    assert want.sum() > 20
    g = polyir.export(net, x[:b])
    got = polyir.compile(g, "torch").run(x.reshape(b, t, N_IN).transpose(0, 1).numpy())
    np.testing.assert_array_equal(got.transpose(1, 0, 2), want)


def test_sinabs_conv_net_with_sum_pooling():
    """sinabs' usual conv stack: Conv2d -> IAFSqueeze -> SumPool2d -> Conv2d -> IAFSqueeze."""
    sl = pytest.importorskip("sinabs.layers")
    b, t = 3, 25
    torch.manual_seed(0)
    first = torch.nn.Conv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        first.weight.uniform_(0, 0.3)
    second = _dyadic(torch.nn.Conv2d(3, 2, 2), 5)
    with torch.no_grad():
        second.bias.fill_(0.125)
    net = torch.nn.Sequential(first, sl.IAFSqueeze(batch_size=b), sl.SumPool2d(2),
                              second, sl.IAFSqueeze(batch_size=b)).double()
    second.float()  # it takes sinabs' float32 spikes; k/8 weights keep its sums exact
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 1, (b * t, 2, 6, 6)))
    with torch.no_grad():
        want = net(x).numpy().reshape(b, t, 2, 2, 2)
        pooled = net[:3](x).numpy()
    assert 20 < want.sum() < 0.9 * want.size * want.max()
    assert pooled.max() > 1 and np.any(pooled != np.round(pooled / 4) * 4)  # sums, not maxima
    g = polyir.export(net, x[:b])
    assert any(isinstance(k, polyir.SumPool2d) for k in g.nodes.values())
    steps = x.numpy().reshape(b, t, 2, 6, 6).transpose(1, 0, 2, 3, 4)
    for backend in ("torch", "c"):
        got = polyir.compile(g, backend).run(steps)
        np.testing.assert_array_equal(got.transpose(1, 0, 2, 3, 4), want, err_msg=backend)


REFUSED = {  # field the refusal names -> a layer with that option
    "min_v_mem": lambda sl, act: sl.IAF(min_v_mem=-1.0),
    "reset_fn": lambda sl, act: sl.LIF(tau_mem=4.0, reset_fn=act.MembraneReset(reset_value=0.5)),
    "subtract_value": lambda sl, act: sl.LIF(tau_mem=4.0,
                                             reset_fn=act.MembraneSubtract(subtract_value=0.5)),
    "spike_threshold": lambda sl, act: sl.IAF(spike_threshold=torch.tensor(0.0)),
    "ceil_mode": lambda sl, act: sl.SumPool2d(2, ceil_mode=True),  # refused before it runs
}


@pytest.mark.parametrize("field", sorted(REFUSED))
def test_sinabs_options_without_a_polyir_form_are_refused_by_name(field):
    sl = pytest.importorskip("sinabs.layers")
    act = pytest.importorskip("sinabs.activation")
    net = torch.nn.Sequential(torch.nn.Linear(N_IN, N), REFUSED[field](sl, act)).double()
    with pytest.raises(polyir.GraphError) as info:
        polyir.export(net, torch.zeros(2, N_IN, dtype=torch.float64))
    assert info.value.field == ("reset_fn" if field == "subtract_value" else field)
    assert info.value.fix
