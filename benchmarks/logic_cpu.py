"""CPU benchmark of the generated-C backend against torch eval.

1. A 784 -> 8000 x 6 LogicLayer net + GroupSum(10), random wiring and gates (seed 0), on 100,000
   random bit samples: compile time (cold cache), polyir C samples/s on one thread and on all
   threads (0/1 uint8 input, and packed-bit input), torch eval samples/s (on fewer samples: it is
   much slower; the count is printed). Outputs are checked equal (bit-exact counts).
2. An MLP 4-32-32-1 (tanh) on 1,000,000 points: polyir C vs torch, same checks within float32
   tolerance.

Throughput is reported twice: from wall time and from the process's CPU time. On a shared machine
the CPU-time figure is the better estimate of what one core does; for the threaded runs only wall
time means anything. Usage: python benchmarks/logic_cpu.py [--samples N] [--torch-samples N]
[--unrolled] (also measure the one-statement-per-gate variant: minutes of compile time).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import polyir
from polyir import ir
from polyir.backends.c import pack_bits


def logic_net(seed=0, n_in=784, width=8000, depth=6, k=10):
    rng = np.random.default_rng(seed)
    layers, prev = [], n_in
    for _ in range(depth):
        layers.append(ir.LogicLayer(rng.integers(0, prev, width), rng.integers(0, prev, width),
                                    rng.integers(0, 16, width)))
        prev = width
    return ir.Graph.sequential(*layers, ir.GroupSum(k, tau=1.0), input_shape=(n_in,),
                               input_elem="bit")


def mlp(seed=0):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return ir.Graph.sequential(
        ir.Affine((rng.normal(size=(32, 4)) / 2).astype(f32), rng.normal(size=32).astype(f32)),
        ir.Activation("tanh"),
        ir.Affine((rng.normal(size=(32, 32)) / 6).astype(f32), rng.normal(size=32).astype(f32)),
        ir.Activation("tanh"),
        ir.Affine((rng.normal(size=(1, 32)) / 6).astype(f32), np.zeros(1, f32)))


def measure(fn, n, repeat=3):
    """(samples/s by wall time, samples/s by CPU time, last result), best of `repeat`."""
    wall, cpu, y = 1e30, 1e30, None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        y = fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return n / wall, n / max(cpu, 1e-9), y


def fmt(rate):
    return f"{rate / 1e6:10.3f} M/s" if rate >= 1e5 else f"{rate / 1e3:10.2f} k/s"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--torch-samples", type=int, default=2_000)
    ap.add_argument("--mlp-points", type=int, default=1_000_000)
    ap.add_argument("--unrolled", action="store_true")
    args = ap.parse_args(argv)
    import torch
    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores, load average {os.getloadavg()[0]:.1f} (shared machines: "
          "prefer the CPU-time column for one thread)")
    rows = []

    # --- logic net -------------------------------------------------------------------------------
    g = logic_net()
    print(f"logic net: 784 -> 8000 x 6 + GroupSum(10), {polyir.backends.lower.lower(g).gate_count():,}"
          " gates")
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        m = polyir.compile(g, "c", cache_dir=cache)
        compile_s = time.perf_counter() - t0
        print(f"compile (cold cache, table mode): {compile_s:.2f} s total, "
              f"{m.compile_seconds:.2f} s in cc; source {len(m.source) / 1e6:.2f} MB")
        if args.unrolled:
            t0 = time.perf_counter()
            mu = polyir.compile(g, "c", cache_dir=cache, logic="unrolled")
            print(f"compile (unrolled, one statement per gate): {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, (args.samples, 784), dtype=np.uint8)
    xp = pack_bits(x)
    n = args.samples
    m(x[:1000])
    w1, c1, y1 = measure(lambda: m(x, threads=1), n)
    rows.append(("logic", "polyir C, 1 thread, uint8 input", w1, c1))
    w, c, yp = measure(lambda: m(xp, threads=1, packed=True), n)
    rows.append(("logic", "polyir C, 1 thread, packed bits", w, c))
    assert np.array_equal(y1, yp)
    if args.unrolled:
        w, c, yu = measure(lambda: mu(x, threads=1), n)
        rows.append(("logic", "polyir C unrolled, 1 thread", w, c))
        assert np.array_equal(y1, yu)
    w, c, ya = measure(lambda: m(x, threads=cores), n)
    rows.append(("logic", f"polyir C, {cores} threads, uint8 input", w, c))
    w, c, _ = measure(lambda: m(xp, threads=cores, packed=True), n)
    rows.append(("logic", f"polyir C, {cores} threads, packed bits", w, c))
    assert np.array_equal(y1, ya)
    tm = polyir.to_torch(g).eval()
    nt = min(args.torch_samples, n)
    xt = torch.from_numpy(x[:nt].astype(np.float32))
    for threads in (1, cores):
        torch.set_num_threads(threads)
        with torch.no_grad():
            w, c, yt = measure(lambda: tm(xt), nt, repeat=2)
        rows.append(("logic", f"torch eval, {threads} thread(s), {nt:,} samples", w, c))
    assert np.array_equal(yt.numpy(), y1[:nt]), "torch eval and polyir C disagree"
    print("logic outputs: polyir C == torch eval on the torch samples (bit-exact counts)")

    # --- MLP -------------------------------------------------------------------------------------
    g2 = mlp()
    m2 = polyir.compile(g2, "c")
    pts = np.random.default_rng(2).uniform(-1, 1, (args.mlp_points, 4)).astype(np.float32)
    w, c, yc = measure(lambda: m2(pts, threads=1), len(pts))
    rows.append(("mlp", "polyir C, 1 thread", w, c))
    w, c, _ = measure(lambda: m2(pts, threads=cores), len(pts))
    rows.append(("mlp", f"polyir C, {cores} threads", w, c))
    tm2 = polyir.to_torch(g2).eval()
    pt = torch.from_numpy(pts)
    for threads in (1, cores):
        torch.set_num_threads(threads)
        with torch.no_grad():
            w, c, yt2 = measure(lambda: tm2(pt), len(pts))
        rows.append(("mlp", f"torch eval, {threads} thread(s)", w, c))
    err = float(np.abs(yt2.numpy() - yc).max())
    print(f"MLP 4-32-32-1 tanh on {len(pts):,} points: max |polyir C - torch| = {err:.2e}")
    assert err < 1e-4

    print(f"\n{'model':<6} {'runner':<44} {'wall':>14} {'CPU time':>14}")
    for model, name, w, c in rows:
        print(f"{model:<6} {name:<44} {fmt(w):>14} {fmt(c):>14}")
    print(f"logic compile: {compile_s:.2f} s (target <= 5 s); target >= 5 M samples/s on one core")


if __name__ == "__main__":
    main()
