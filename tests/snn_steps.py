"""The step-by-step loop the spiking libraries' own modules are compared with: a Linear feeding
one neuron module, run by calling the module once per time step with its states, against
polyir's torch and C runs of the exported graph."""
import numpy as np
import torch

import polyir

N_IN, N = 3, 4


class Net(torch.nn.Module):
    def __init__(self, cell, scale, layer=None, unpack=False):
        super().__init__()
        torch.manual_seed(0)
        self.fc = (layer or torch.nn.Linear(N_IN, N)).double()
        with torch.no_grad():
            self.fc.weight.mul_(scale)
            self.fc.bias.mul_(scale)
        self.cell, self.unpack = cell.double(), unpack

    def forward(self, x):
        if self.unpack:  # snnTorch's Synaptic as its docs use it
            spk, syn, mem = self.cell(self.fc(x))
            return spk
        return self.cell(self.fc(x))[0]  # (z, state...)


def input_steps(shape=(N_IN,)) -> torch.Tensor:
    """(time 80, batch 4, *shape) inputs in [0, 3)."""
    return torch.from_numpy(np.random.default_rng(1).uniform(0, 3, (80, 4, *shape)))


def compare(cell, scale, n_states=1, layer=None, shape=(N_IN,), unpack=False,
            return_spikes=False):
    """The library's own loop (the cell called step by step with its states) against polyir's
    torch and C runs of the exported graph; returns the graph (and the library's spikes with
    return_spikes)."""
    net = Net(cell.double(), scale, layer, unpack)
    x = input_steps(shape)
    state, want = (None,) * n_states, []
    with torch.no_grad():  # before export: snnTorch keeps the last state inside the module
        for t in range(len(x)):
            z, *state = net.cell(net.fc(x[t]), *state)
            if n_states == len(state) + 1:  # RLeaky / RSynaptic take the spikes back first
                state = [z, *state]
            want.append(z.numpy())
    want = np.stack(want)
    assert 20 < want.sum() < 0.9 * want.size
    g = polyir.export(net, x[0])
    for backend in ("torch", "c"):
        np.testing.assert_array_equal(polyir.compile(g, backend).run(x.numpy()), want,
                                      err_msg=backend)
    return (g, want) if return_spikes else g
