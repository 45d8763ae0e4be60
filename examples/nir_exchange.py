"""Exchange a spiking network with other neuromorphic tools through NIR.

A torch model with a leaky integrate-and-fire layer (polyir.nn.LIF, which threads its state as
`out, state = lif(x, state)`) is exported, written as a `.nir` file with NIR's own writer, read
back with NIR's reader, and turned into a polyir graph and a torch module again. Both modules give
the same spike trains. polyir also opens `.nir` files directly (`polyir.load("net.nir")`).

    python examples/nir_exchange.py
"""
import nir
import torch

import polyir
from polyir import nn as pnn


class SpikingNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)
        self.lif = pnn.LIF(tau=torch.full((4,), 0.02), r=torch.ones(4), v_leak=torch.zeros(4),
                           v_threshold=torch.ones(4), dt=1e-3)

    def forward(self, x, state=None):
        return self.lif(self.fc(x), state)


torch.manual_seed(0)
net = SpikingNet()
graph = polyir.export(net, torch.randn(1, 3))

nir.write("snn.nir", polyir.to_nir(graph))          # any NIR tool can read this file
back = polyir.from_nir(nir.read("snn.nir"))          # ... and polyir reads what they write
assert polyir.load("snn.nir").nodes.keys() == back.nodes.keys()

xs = 40 * torch.rand(50, 8, 3)                       # (time, batch, features)
with torch.no_grad():
    spikes = polyir.to_torch(back).run(xs)
    state, want = None, []
    for x in xs:
        z, state = net(x, state)
        want.append(z)
torch.testing.assert_close(spikes, torch.stack(want))
print(f"NIR round trip: {sorted(back.nodes)}; {int(spikes.sum())} spikes, identical to the "
      "original model's")
