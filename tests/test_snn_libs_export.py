"""polyir.export straight from snnTorch's and Norse's neuron modules (no NIR file): polyir's torch
and C runs give the library's own spikes, step for step."""
import numpy as np
import pytest
import torch

import polyir

N_IN, N = 3, 4


class _Net(torch.nn.Module):
    def __init__(self, cell, scale):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(N_IN, N).double()
        with torch.no_grad():
            self.fc.weight.mul_(scale)
            self.fc.bias.mul_(scale)
        self.cell = cell

    def forward(self, x):
        return self.cell(self.fc(x))[0]  # (z, state); snnTorch's Synaptic: (z, syn, mem)


def _compare(cell, scale, n_states=1):
    net = _Net(cell.double(), scale)
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 3, (80, 4, N_IN)))
    state, want = (None,) * n_states, []
    with torch.no_grad():  # before export: snnTorch keeps the last state inside the module
        for t in range(len(x)):
            z, *state = net.cell(net.fc(x[t]), *state)
            want.append(z.numpy())
    want = np.stack(want)
    assert want.sum() > 20
    g = polyir.export(net, x[0])
    for backend in ("torch", "c"):
        np.testing.assert_array_equal(polyir.compile(g, backend).run(x.numpy()), want,
                                      err_msg=backend)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("delay", [True, False])
def test_snntorch_leaky(reset, delay):
    snn = pytest.importorskip("snntorch")
    _compare(snn.Leaky(beta=torch.tensor([0.8, 0.7, 0.9, 0.6]), reset_mechanism=reset,
                       reset_delay=delay), 1.0)


def test_snntorch_synaptic():
    snn = pytest.importorskip("snntorch")
    _compare(snn.Synaptic(alpha=torch.tensor([0.7, 0.5, 0.9, 0.6]),
                          beta=torch.tensor([0.8, 0.7, 0.9, 0.6])), 1.0, n_states=2)


@pytest.mark.parametrize("cell", ["LIFBoxCell", "LIFCell"])
def test_norse_cell(cell):
    norse = pytest.importorskip("norse.torch")
    _compare(getattr(norse, cell)(), 60.0)  # 10 ms membranes at dt = 1 ms need large inputs


def test_snntorch_hidden_state_is_refused_with_the_fix():
    snn = pytest.importorskip("snntorch")
    net = torch.nn.Sequential(torch.nn.Linear(N_IN, N), snn.Leaky(beta=0.8, init_hidden=True))
    with pytest.raises(polyir.GraphError, match="init_hidden=True keeps its membrane"):
        polyir.export(net, torch.zeros(2, N_IN))
