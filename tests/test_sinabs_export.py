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


def test_sinabs_membrane_floor_is_refused_with_the_fix():
    sl = pytest.importorskip("sinabs.layers")
    net = torch.nn.Sequential(torch.nn.Linear(N_IN, N), sl.IAF(min_v_mem=-1.0))
    with pytest.raises(polyir.GraphError, match="min_v_mem"):
        polyir.export(net, torch.zeros(2, N_IN, dtype=next(net.parameters()).dtype))
