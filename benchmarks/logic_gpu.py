"""GPU benchmark of the CUDA backend; needs CuPy and an NVIDIA GPU.

1. The 784 -> 8000 x 6 LogicLayer + GroupSum(10) net (benchmarks/logic_cpu.py's, seed 0) at batch
   1,000,000 (and 10,000,000 if memory allows): polyir cuda samples/s excluding host<->device
   copies (inputs already on the GPU) and including them (numpy in, numpy out), against torch eval
   of the same model on the same GPU (when torch has CUDA). Outputs are checked bit-exact.
2. Leaky integrators: 1,000 LIF neurons x 1,000 steps x batch 1,024 behind an Affine, the fused
   time-loop kernel against torch's step loop.
3. The 700-512-20 LIF net of benchmarks/snn_timeloop.py, 200 steps of Bernoulli(0.1) input
   spikes, batch 256 and 4,096: the spike-fed kernel (tile following the batch) against torch's
   step loop, with the fraction of spikes that differ.
Without CuPy or a GPU it says so and exits 0 (nothing to measure).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

import polyir  # noqa: E402
from polyir import ir  # noqa: E402


def gpu_available():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0, cupy
    except Exception as exc:  # ImportError, no driver
        return False, exc


def timed(fn, sync, repeat=3):
    best, y = 1e30, None
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        y = fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best, y


def lif_graph(n=1000, n_in=64, seed=0):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    g = ir.Graph(metadata={"dt": 1e-3})
    g.add("x", ir.Input((n_in,)))
    g.add("fc", ir.Affine((rng.normal(size=(n, n_in)) / 4).astype(f32), np.zeros(n, f32)))
    g.add("lif", ir.LIF(tau=np.full(n, 2e-2, f32), r=np.ones(n, f32), v_leak=np.zeros(n, f32),
                        v_threshold=np.full(n, 0.1, f32)))
    g.add("y", ir.Output((n,)))
    for e in (("x", "fc"), ("fc", "lif"), ("lif", "y")):
        g.connect(*e)
    return g


def main():
    ok, cp = gpu_available()
    if not ok:
        print(f"logic_gpu: no GPU to benchmark on ({cp!r}); the CUDA backend's kernels are still "
              "compiled with nvcc and run under the host emulator by tests/test_backend_cuda.py. "
              "GPU figures: pending.")
        return 0
    from logic_cpu import logic_net
    import torch
    have_torch_cuda = torch.cuda.is_available()
    sync = cp.cuda.Device().synchronize
    print(f"GPU: {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    g = logic_net()
    t0 = time.perf_counter()
    m = polyir.compile(g, "cuda")
    x_small = np.random.default_rng(0).integers(0, 2, (1000, 784), dtype=np.uint8)
    m(x_small)
    print(f"compile + first call (NVRTC): {time.perf_counter() - t0:.2f} s")
    tm = polyir.to_torch(g).eval().cuda() if have_torch_cuda else None
    for batch in (1_000_000, 10_000_000):
        free = cp.cuda.runtime.memGetInfo()[0]
        if batch * 784 * 1.5 > free:
            print(f"batch {batch:,}: skipped (needs ~{batch * 784 * 1.5 / 1e9:.1f} GB)")
            continue
        xg = cp.random.randint(0, 2, (batch, 784), dtype=cp.uint8)
        dt_dev, yg = timed(lambda: m(xg), sync)
        xh = cp.asnumpy(xg)
        dt_host, yh = timed(lambda: m(xh), sync, repeat=2)
        print(f"batch {batch:,}: polyir cuda {batch / dt_dev / 1e9:.3f} G samples/s excluding "
              f"copies, {batch / dt_host / 1e6:.1f} M samples/s including copies")
        if tm is not None and batch <= 1_000_000:
            xt = torch.as_tensor(xg, device="cuda").float()
            with torch.no_grad():
                dt_t, yt = timed(lambda: tm(xt), torch.cuda.synchronize)
            same = np.array_equal(yt.cpu().numpy(), cp.asnumpy(yg))
            print(f"  torch eval (cuda): {batch / dt_t / 1e6:.1f} M samples/s; outputs equal: {same}")
        del xg
    lg = lif_graph()
    ml = polyir.compile(lg, "cuda")
    seq = cp.random.standard_normal((1000, 1024, 64), dtype=cp.float32)
    dt_l, _ = timed(lambda: ml.run(seq), sync, repeat=2)
    print(f"LIF 1000 neurons x 1000 steps x batch 1024: polyir fused kernel {dt_l * 1e3:.1f} ms")
    if have_torch_cuda:
        tl = polyir.to_torch(lg).eval().cuda()
        st = torch.as_tensor(seq, device="cuda")
        with torch.no_grad():
            dt_tl, _ = timed(lambda: tl.run(st), torch.cuda.synchronize, repeat=2)
        print(f"  torch step loop: {dt_tl * 1e3:.1f} ms")
    from snn_timeloop import lif_net
    sg = lif_net(700, 512, 20)
    ms = polyir.compile(sg, "cuda")
    ts = polyir.to_torch(sg).eval().cuda() if have_torch_cuda else None
    for batch in (256, 4096):
        spikes = (cp.random.random((200, batch, 700)) < 0.1).astype(cp.float32)
        dt_s, ys = timed(lambda: ms.run(spikes), sync, repeat=2)
        line = (f"LIF 700-512-20, 200 steps, batch {batch:,} (spike-fed, tile "
                f"{ms.tile_for(batch)}): polyir {dt_s * 1e3:.1f} ms")
        if ts is not None:
            st = torch.as_tensor(spikes, device="cuda")
            with torch.no_grad():
                dt_ts, yt = timed(lambda: ts.run(st), torch.cuda.synchronize, repeat=2)
            differ = float(np.mean(cp.asnumpy(ys) != yt.cpu().numpy()))
            line += f"; torch step loop {dt_ts * 1e3:.1f} ms; spikes differing {differ:.1e}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
