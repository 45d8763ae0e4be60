"""Run a graph as generated C on the CPU, and with CuPy kernels on a GPU when one is present.

`polyir.compile(graph, "c")` writes one C file for the graph, compiles it with the system compiler
and loads it; the result is a callable on numpy arrays. Its outputs equal the torch module's
eval-mode outputs within float tolerance (bit for bit on logic graphs).

    python examples/run_in_c.py
"""
import numpy as np
import torch

import polyir

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 10))
x = torch.randn(1000, 1, 8, 8)
graph = polyir.export(model.eval(), x)

run = polyir.compile(graph, "c")
y = run(x.numpy())
with torch.no_grad():
    want = model(x).numpy()
np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
print(f"C backend: {y.shape[0]} samples, max |C - torch| = {np.abs(y - want).max():.1e}")
print("generated C:", len(run.source.splitlines()), "lines; `polyir codegen FILE -o model.c` "
      "writes it for another program")

try:
    import cupy
    has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # no CuPy, or no driver
    has_gpu = False
if has_gpu:
    on_gpu = polyir.compile(graph, "cuda")
    y_gpu = cupy.asnumpy(on_gpu(x.numpy()))
    np.testing.assert_allclose(y_gpu, want, rtol=1e-4, atol=1e-5)
    print(f"CUDA backend: max |GPU - torch| = {np.abs(y_gpu - want).max():.1e}")
else:
    print("no CUDA GPU with CuPy here: polyir.compile(graph, 'cuda') needs both")
