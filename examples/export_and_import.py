"""Export a torch model to a polyir .h5 file and bring it back as a trainable torch module.

A small MLP classifier is traced into a polyir Graph, saved, loaded (every check the loader makes
runs), imported back with `polyir.to_torch`, and fine-tuned for a few steps: the imported module's
parameters are ordinary `nn.Parameter`s.

    python examples/export_and_import.py
"""
import torch

import polyir

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
x = torch.randn(32, 4)

# export to .h5
graph = polyir.export(model, x)
polyir.save(graph, "mlp.h5")
print(polyir.load("mlp.h5"))

# import into torch: the same outputs, and trainable
imported = polyir.to_torch("mlp.h5")
with torch.no_grad():
    torch.testing.assert_close(imported(x), model(x))
opt = torch.optim.SGD(imported.parameters(), lr=0.1)
target = torch.randint(0, 3, (32,))
losses = []
for _ in range(20):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(imported(x), target)
    loss.backward()
    opt.step()
    losses.append(loss.item())
assert losses[-1] < losses[0]
print(f"imported module: same outputs as the original; fine-tuned loss {losses[0]:.3f} -> "
      f"{losses[-1]:.3f}")
