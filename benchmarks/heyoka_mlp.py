"""1,000,000 points through a 4-32-32-1 MLP (tanh, tanh, sigmoid): heyoka cfunc (float64 and
float32, SIMD batch mode, serial and batch-parallel), torch CPU, polyir's C backend; then heyoka
compile times for a 784-256-256-10 MLP with and without compact mode.

    .venv/bin/python benchmarks/heyoka_mlp.py [--points 1000000] [--repeat 3] [--big-timeout 600]

Times are the best of --repeat runs (wall clock, this machine's cores shared with whatever else
runs). Each row also reports the max |difference| from torch's float64 output.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

import polyir
from polyir import ir


def mlp_graph(sizes, acts, seed=0):
    rng = np.random.default_rng(seed)
    nodes = []
    for (a, b), act in zip(zip(sizes, sizes[1:]), acts):
        bound = 1 / np.sqrt(a)
        nodes.append(ir.Affine(rng.uniform(-bound, bound, (b, a)), rng.uniform(-bound, bound, b)))
        nodes.append(ir.Activation(act))
    return ir.Graph.sequential(*nodes)


def torch_model(g, dtype):
    mods = []
    for node in g.nodes.values():
        if isinstance(node, ir.Affine):
            lin = torch.nn.Linear(node.weight.shape[1], node.weight.shape[0], dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(torch.tensor(node.weight))
                lin.bias.copy_(torch.tensor(node.bias))
            mods.append(lin)
        elif isinstance(node, ir.Activation):
            mods.append({"tanh": torch.nn.Tanh(), "sigmoid": torch.nn.Sigmoid(),
                         "relu": torch.nn.ReLU()}[node.fn])
    return torch.nn.Sequential(*mods).eval()


def best(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def small(points, repeat):
    from polyir.backends.heyoka import compile as heyoka_compile
    g = mlp_graph([4, 32, 32, 1], ["tanh", "tanh", "sigmoid"])
    x = np.random.default_rng(1).normal(size=(points, 4))
    x32 = x.astype(np.float32)
    m64, m32 = torch_model(g, torch.float64), torch_model(g, torch.float32)
    with torch.no_grad():
        ref = m64(torch.from_numpy(x)).numpy()
    rows = []

    def row(name, secs, y, compile_s=None):
        err = float(np.abs(np.asarray(y, np.float64) - ref).max()) if y is not None else None
        rows.append({"backend": name, "seconds": secs, "Mpoints_per_s": points / secs / 1e6,
                     "max_abs_diff_vs_torch64": err, "compile_s": compile_s})

    for dtype, xin in (("float64", x), ("float32", x32)):
        for parallel in (False, True):
            p = heyoka_compile(g, dtype=dtype, parallel=parallel)
            secs, y = best(lambda: p(xin), repeat)
            row(f"heyoka cfunc {dtype} batch={p.batch_size}"
                f"{' parallel' if parallel else ''}", secs, y, p.compile_seconds)
    for name, m, xin in (("torch CPU float64", m64, x), ("torch CPU float32", m32, x32)):
        xt = torch.from_numpy(xin)
        with torch.no_grad():
            secs, y = best(lambda: m(xt).numpy(), repeat)
        row(f"{name} ({torch.get_num_threads()} threads)", secs, y)
    try:
        t0 = time.perf_counter()
        c = polyir.compile(g, "c")
        ct = time.perf_counter() - t0
        secs, y = best(lambda: c(x), repeat)
        row("polyir C (float32 in/out)", secs, y, ct)
    except Exception as exc:  # the C backend may not cover this graph yet
        rows.append({"backend": "polyir C", "pending": f"{type(exc).__name__}: {exc}"[:200]})
    return rows


BIG = r"""
import sys, time, numpy as np, heyoka as hy
sys.path.insert(0, {root!r})
from benchmarks.heyoka_mlp import mlp_graph
from polyir.importers.heyoka import to_heyoka
g = mlp_graph([784, 256, 256, 10], ["tanh", "tanh", "identity"])
t0 = time.perf_counter(); ex, vs = to_heyoka(g); t1 = time.perf_counter()
cf = hy.cfunc(ex, vs, compact_mode={compact}, batch_size=hy.recommended_simd_size())
t2 = time.perf_counter()
x = np.random.default_rng(0).normal(size=(784, 10000))
t3 = time.perf_counter(); y = cf(x); t4 = time.perf_counter()
print({{"build_s": t1 - t0, "compile_s": t2 - t1, "eval_10k_s": t4 - t3}})
"""


def big(timeout):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = []
    for compact in (True, False):
        t0 = time.perf_counter()
        try:
            r = subprocess.run([sys.executable, "-c", BIG.format(root=root, compact=compact)],
                               capture_output=True, text=True, timeout=timeout)
            res = (eval(r.stdout.strip().splitlines()[-1]) if r.returncode == 0
                   else {"error": r.stderr[-300:]})
        except subprocess.TimeoutExpired:
            res = {"error": f"compile did not finish within {timeout} s"}
        res.update(compact_mode=compact, wall_s=time.perf_counter() - t0)
        out.append(res)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-timeout", type=float, default=600)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = small(args.points, args.repeat)
    bigs = [] if args.skip_big else big(args.big_timeout)
    if args.json:
        print(json.dumps({"mlp_4_32_32_1": rows, "compile_784_256_256_10": bigs}, indent=2))
        return
    print(f"4-32-32-1 MLP (tanh, tanh, sigmoid), {args.points:,} points, best of {args.repeat}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'backend':<44} {'seconds':>8} {'Mpts/s':>8} {'max|diff|':>10} {'compile s':>9}")
    for r in rows:
        if "pending" in r:
            print(f"{r['backend']:<44} pending: {r['pending']}")
            continue
        cs = "" if r["compile_s"] is None else f"{r['compile_s']:.2f}"
        print(f"{r['backend']:<44} {r['seconds']:8.4f} {r['Mpoints_per_s']:8.1f} "
              f"{r['max_abs_diff_vs_torch64']:10.1e} {cs:>9}")
    if bigs:
        print("\nheyoka compile, 784-256-256-10 MLP (tanh, tanh, identity) as one ffnn:")
        for r in bigs:
            if "error" in r:
                print(f"  compact_mode={r['compact_mode']!s:<5}: {r['error']}")
            else:
                print(f"  compact_mode={r['compact_mode']!s:<5}: expressions {r['build_s']:.2f} s, "
                      f"cfunc compile {r['compile_s']:.1f} s, 10k points {r['eval_10k_s']:.3f} s")


if __name__ == "__main__":
    main()
