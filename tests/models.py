"""Small torch models shared by several test files."""
import torch
from torch import nn


class RecurrentSNN(nn.Module):
    """Linear -> spiking neuron (with a recurrent Linear from its spikes) -> Linear -> LI, written
    the way users thread state: `forward(x, state) -> (y, state)`."""

    def __init__(self, neuron: nn.Module, readout: nn.Module, n_in: int, n: int, n_out: int,
                 out_bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(n_in, n)
        self.lif = neuron
        self.rec = nn.Linear(n, n, bias=False)
        self.out = nn.Linear(n, n_out, bias=out_bias)
        self.li = readout

    def forward(self, x, state=None):
        if state is None:
            state = (None, None, None)
        z_prev, s_lif, s_li = state
        h = self.fc(x)
        if z_prev is not None:
            h = h + self.rec(z_prev)
        z, s_lif = self.lif(h, s_lif)
        y, s_li = self.li(self.out(z), s_li)
        return y, (z, s_lif, s_li)

    def run(self, xs, spikes=None):
        state, ys = None, []
        for t in range(len(xs)):
            y, state = self(xs[t], state)
            ys.append(y)
            if spikes is not None:
                spikes.append(state[0])
        return torch.stack(ys)
