"""CPU benchmark of the generated-C backend on logic nets.

Models:
  random   784 -> LogicLayer 8000 x 6 -> GroupSum(10), random wiring and gates (seed 0)
  trained  the same shape trained for a few hundred steps on scikit-learn's digits (8x8 images
           upscaled to 28x28 and binarized), exported with polyir.export
  conv     a LogicTreeNet-S-like CIFAR net: float (3, 32, 32) -> thermometer Binarize (3 levels)
           -> 4 blocks LogicTree2d (depth 3, 3x3, padding 1) + OrPool2d(2) with 32, 64, 128, 256
           kernels -> LogicLayer 4000, 2000, 1000 -> GroupSum(10), random gates
  g1280    Input bit(128) -> LogicLayer 640 -> LogicLayer 640 -> GroupSum(10)
  big      784 -> LogicLayer 50000 x 8 (400,000 gates) -> GroupSum(10), compile time only

What is measured:
  - compile time with a cold cache (optimiser on, the default flags), and gates before / after
    polyir.optimize;
  - samples/s on one thread per input path (uint8 bytes, packed bits, bool, float32) with the
    optimiser on and off, in alternated rounds (A, B, A, B, ...): each contender's best round,
    by CPU time (what one core does) and by wall time;
  - two threads against one, packed bits and uint8, alternated (wall time: what the caller
    waits; CPU time summed over both threads);
  - per layer, time-stamp ticks per gate-word (rdtsc around each node's function, a
    -DPOLYIR_PROFILE build; one thread) for each gate order of `compile(relayout=...)`, the
    orders alternated round by round (best round per order and layer).
Outputs are checked against torch eval (bit-exact counts) on a subset.

The machine may be shared: `uptime` is printed before and after; prefer the CPU-time column.
Two threads only scale on an idle machine with two free cores.
Usage: python benchmarks/logic_cpu.py [--samples N] [--rounds R] [--only SECTIONS]
  SECTIONS: comma-separated of random, threads, layers, trained, conv, compile (default: all)
"""
from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import tempfile
import time

import numpy as np

import polyir
from polyir import ir
from polyir.backends.c import pack_bits
from polyir.ir.optimize import gate_count


def logic_net(seed=0, n_in=784, width=8000, depth=6, k=10):
    rng = np.random.default_rng(seed)
    layers, prev = [], n_in
    for _ in range(depth):
        layers.append(ir.LogicLayer(rng.integers(0, prev, width), rng.integers(0, prev, width),
                                    rng.integers(0, 16, width)))
        prev = width
    return ir.Graph.sequential(*layers, ir.GroupSum(k, tau=1.0), input_shape=(n_in,),
                               input_elem="bit")


def conv_net(seed=0):
    rng = np.random.default_rng(seed)
    nodes, c, hw = [ir.Binarize(np.array([0.25, 0.5, 0.75], np.float32), axis=0)], 9, 32
    for k in (32, 64, 128, 256):
        leaves = np.stack([rng.integers(0, c, (k, 8)), rng.integers(0, 3, (k, 8)),
                           rng.integers(0, 3, (k, 8))], -1)
        nodes += [ir.LogicTree2d(leaves, rng.integers(0, 16, (k, 7)), (3, 3), padding=(1, 1)),
                  ir.OrPool2d((2, 2), (2, 2))]
        c, hw = k, hw // 2
    nodes.append(ir.Flatten(start_dim=0))
    prev = c * hw * hw
    for w in (4000, 2000, 1000):
        nodes.append(ir.LogicLayer(rng.integers(0, prev, w), rng.integers(0, prev, w),
                                   rng.integers(0, 16, w)))
        prev = w
    nodes.append(ir.GroupSum(10, tau=1.0))
    return ir.Graph.sequential(*nodes, input_shape=(3, 32, 32))


def g1280(seed=0):
    rng = np.random.default_rng(seed)
    layers = [ir.LogicLayer(rng.integers(0, n_in, 640), rng.integers(0, n_in, 640),
                            rng.integers(0, 16, 640)) for n_in in (128, 640)]
    return ir.Graph.sequential(*layers, ir.GroupSum(10), input_shape=(128,), input_elem="bit")


def trained_net(steps=300, seed=0):
    """784 -> 8000 x 6 -> GroupSum(10) trained on upscaled, binarized sklearn digits."""
    import torch
    from sklearn.datasets import load_digits

    import polyir.nn as pnn
    d = load_digits()
    img = torch.from_numpy(d.images).float()[:, None] / 16.0
    x = (torch.nn.functional.interpolate(img, size=(28, 28), mode="bilinear") > 0.3).float()
    x, y = x.reshape(len(x), -1), torch.from_numpy(d.target)
    torch.manual_seed(seed)
    layers = [pnn.LogicLayer(784 if i == 0 else 8000, 8000, seed=seed + i) for i in range(6)]
    model = torch.nn.Sequential(*layers, pnn.GroupSum(10, tau=30.0))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    return polyir.export(model, x[:2]), acc, x.numpy().astype(np.uint8)


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    y = fn()
    return time.perf_counter() - t0, time.process_time() - c0, y


def alternate(contenders: dict, n: int, rounds: int):
    """{name: fn} run in alternated rounds -> {name: (best samples/s by wall, by CPU)}."""
    best = {k: (0.0, 0.0) for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            w, c, _ = timed(fn)
            bw, bc = best[name]
            best[name] = (max(bw, n / w), max(bc, n / max(c, 1e-9)))
    return best


def cold_compile(g, **opts):
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        m = polyir.compile(g, "c", cache_dir=cache, **opts)
        return m, time.perf_counter() - t0


def profile_build(g, relayout="runs"):
    """A -DPOLYIR_PROFILE build of `g` (512-bit words where the host has them)."""
    m, _ = cold_compile(g, extra_flags=("-DPOLYIR_PROFILE",), word_bits=None, relayout=relayout)
    return m


def profile(m, x, packed=False):
    """Per step function of `m`: (node, function, rdtsc ticks per tile, per gate-word, gates)."""
    v = m._variants[m.tile]
    names = v.renderer.step_names
    ticks = (ctypes.c_uint64 * len(names))()
    v.lib.polyir_profile_reset()
    m(pack_bits(x) if packed else x, threads=1, packed=packed)
    v.lib.polyir_profile(ticks)
    tiles = -(-len(x) // m.tile)
    gates = {op.node: 0 for op in m.program.ops}
    for op in m.program.ops:
        if op.op == "logic":
            gates[op.node] += len(op.consts["gate"])
    rows = []
    for (fn, node), t in zip(names, ticks):
        per_tile = t / tiles
        g_ = gates.get(node, 0) if fn.startswith("node_") else 0
        rows.append((node, fn, per_tile, per_tile / g_ if g_ else None, g_))
    return rows


def profile_alternated(builds: dict, x, rounds: int, packed=False):
    """{name: build} profiled in alternated rounds -> {name: rows with each step's best round}."""
    best: dict = {}
    for _ in range(rounds):
        for name, m in builds.items():
            rows = profile(m, x, packed)
            old = best.get(name)
            best[name] = rows if old is None else [min(a, b, key=lambda r: r[2])
                                                   for a, b in zip(old, rows)]
    return best


def fmt(rate):
    return f"{rate / 1e6:8.3f} M/s" if rate >= 1e5 else f"{rate / 1e3:8.1f} k/s"


SECTIONS = ("random", "threads", "layers", "trained", "conv", "compile")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help="comma-separated sections: " + ", ".join(SECTIONS))
    ap.add_argument("--skip-trained", action="store_true")
    ap.add_argument("--skip-big", action="store_true")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    if args.skip_trained:
        only.discard("trained")
    unknown = only - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    import torch
    torch.set_num_threads(1)
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime: {up}\n{os.cpu_count()} cores (shared machines: prefer the CPU-time column)")
    c0, t0 = time.process_time(), time.perf_counter()
    n = args.samples
    rng = np.random.default_rng(1)

    # --- random 784 -> 8000 x 6 ----------------------------------------------------------------
    g = logic_net()
    x = rng.integers(0, 2, (n, 784), dtype=np.uint8)
    xp = pack_bits(x)
    if only & {"random", "threads"}:
        m_on, t_on = cold_compile(g)
    if "random" in only:
        before, after = sum(gate_count(g).values()), sum(gate_count(polyir.optimize(g)).values())
        m_off, t_off = cold_compile(g, optimize=False)
        print(f"\nrandom 784 -> 8000 x 6 -> GroupSum(10): {before:,} gates, {after:,} after "
              f"polyir.optimize; compile (cold) {t_off:.2f} s unoptimised, {t_on:.2f} s optimised; "
              f"word {m_on.tile} bits")
        xb, xf = x.astype(bool), x.astype(np.float32)
        tm = polyir.to_torch(g).eval()
        with torch.no_grad():
            ref = tm(torch.from_numpy(xf[:2000])).numpy()
        for m in (m_off, m_on):
            assert np.array_equal(m(x[:2000]), ref) and np.array_equal(m(xp[:2000], packed=True), ref)
        print("outputs equal torch eval on 2,000 samples (optimised and not, uint8 and packed)")
        res = alternate({
            "unoptimised, uint8": lambda: m_off(x, threads=1),
            "optimised, uint8": lambda: m_on(x, threads=1),
            "unoptimised, packed bits": lambda: m_off(xp, threads=1, packed=True),
            "optimised, packed bits": lambda: m_on(xp, threads=1, packed=True),
            "optimised, bool": lambda: m_on(xb, threads=1),
            "optimised, float32": lambda: m_on(xf, threads=1),
        }, n, args.rounds)
        print(f"{'random net, 1 thread':<34} {'wall':>12} {'CPU time':>12}")
        for k, (w, c) in res.items():
            print(f"{k:<34} {fmt(w):>12} {fmt(c):>12}")

    if "threads" in only:
        thr = alternate({"packed, 1 thread": lambda: m_on(xp, threads=1, packed=True),
                         "packed, 2 threads": lambda: m_on(xp, threads=2, packed=True),
                         "uint8, 1 thread": lambda: m_on(x, threads=1),
                         "uint8, 2 threads": lambda: m_on(x, threads=2)}, n, args.rounds)
        print(f"\n{'random net, optimised':<34} {'wall':>12} {'CPU time':>12}  (CPU time: all threads)")
        for k, (w, c) in thr.items():
            print(f"{k:<34} {fmt(w):>12} {fmt(c):>12}")
        for path in ("packed", "uint8"):
            one, two = thr[f"{path}, 1 thread"][0], thr[f"{path}, 2 threads"][0]
            print(f"{path}: 2 threads / 1 thread (wall) = {two / one:.2f}x")

    if "layers" in only:
        orders = ("runs", "blocked")
        builds = {o: profile_build(g, o) for o in orders}
        xs = x[:min(n, 20000)]
        ref = builds["runs"](xs[:3000])
        for o in orders:  # the order of gates inside a buffer never changes an output bit
            assert np.array_equal(builds[o](xs[:3000]), ref)
        best = profile_alternated(builds, xs, args.rounds, packed=True)
        tile = builds["runs"].tile
        print(f"\nper node (optimised, packed, {tile}-bit words, one thread, best of {args.rounds} "
              "alternated rounds): time-stamp ticks per tile; per gate-word for logic layers")
        print(f"  {'node':<16}" + "".join(f"{'relayout=' + o:>24}" for o in orders))
        for k, (node, fn, *_rest) in enumerate(best["runs"]):
            cells = []
            for o in orders:
                _, _, per_tile, per_gate, gates = best[o][k]
                cells.append(f"{per_gate:6.2f}/gate-word" if per_gate else f"{per_tile:12,.0f}/tile")
            print(f"  {node:<16}" + "".join(f"{c:>24}" for c in cells))
        for o in orders:
            total = sum(r[2] for r in best[o])
            print(f"  relayout={o}: {total / tile:,.1f} ticks per sample "
                  f"(sum of the best rounds)")

    # --- trained -----------------------------------------------------------------------------
    if "trained" in only:
        t1 = time.perf_counter()
        gt, acc, xd = trained_net()
        b, a = sum(gate_count(gt).values()), sum(gate_count(polyir.optimize(gt)).values())
        print(f"\ntrained 784 -> 8000 x 6 (digits, {time.perf_counter() - t1:.0f} s training, "
              f"train accuracy {acc:.2f}): {b:,} gates, {a:,} after polyir.optimize")
        mt_off, tt_off = cold_compile(gt, optimize=False)
        mt_on, tt_on = cold_compile(gt)
        xt = xd[rng.integers(0, len(xd), n)]
        assert np.array_equal(mt_off(xt[:2000]), mt_on(xt[:2000]))
        xtp = pack_bits(xt)
        res = alternate({"unoptimised, uint8": lambda: mt_off(xt, threads=1),
                         "optimised, uint8": lambda: mt_on(xt, threads=1),
                         "unoptimised, packed bits": lambda: mt_off(xtp, threads=1, packed=True),
                         "optimised, packed bits": lambda: mt_on(xtp, threads=1, packed=True)},
                        n, args.rounds)
        print(f"compile (cold) {tt_off:.2f} s / {tt_on:.2f} s optimised")
        for k, (w, c) in res.items():
            print(f"{k:<34} {fmt(w):>12} {fmt(c):>12}")

    # --- conv ----------------------------------------------------------------------------------
    if "conv" in only:
        gc = conv_net()
        b, a = sum(gate_count(gc).values()), sum(gate_count(polyir.optimize(gc)).values())
        mc, tc = cold_compile(gc)
        nc = max(2000, n // 5)
        xc = rng.uniform(0, 1, (nc, 3, 32, 32)).astype(np.float32)
        with torch.no_grad():
            refc = polyir.to_torch(gc).eval()(torch.from_numpy(xc[:200])).numpy()
        assert np.array_equal(mc(xc[:200]), refc)
        res = alternate({"conv, float32, 1 thread": lambda: mc(xc, threads=1)}, nc, args.rounds)
        print(f"\nLogicTreeNet-S-like conv net: {b:,} gate slots ({a:,} after optimize: only its "
              f"LogicLayers shrink); compile (cold) {tc:.2f} s; equal to torch eval on 200 samples")
        for k, (w, c) in res.items():
            print(f"{k:<34} {fmt(w):>12} {fmt(c):>12}")
        mp = profile_build(gc)
        rows = profile(mp, xc[:4000])
        print(f"per node ({mp.tile}-bit words): rdtsc ticks per tile")
        for node, fn, per_tile, per_gate, gates in rows:
            print(f"  {node:<16} {per_tile:12,.0f}")

    # --- compile times -------------------------------------------------------------------------
    if "compile" in only:
        _, t = cold_compile(g1280())
        _, t_avx = cold_compile(g1280(), portable=True, extra_flags=("-march=skylake-avx512",))
        print(f"\ncompile (cold): 1,280-gate graph {t:.2f} s (native), {t_avx:.2f} s "
              "(-march=skylake-avx512)")
        if not args.skip_big:
            big = logic_net(width=50000, depth=8)
            _, t = cold_compile(big)
            _, t2 = cold_compile(big, optimize=False)
            print(f"compile (cold): 784 -> 50000 x 8 (400,000 gates) {t:.2f} s optimised, "
                  f"{t2:.2f} s unoptimised")
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nuptime: {up}\nthis run: {time.process_time() - c0:.1f} s CPU time (this process), "
          f"{time.perf_counter() - t0:.1f} s wall")


if __name__ == "__main__":
    main()
