"""heyoka compile time: where compact mode pays off, and polyir's automatic choice against the best
mode written by hand.

For MLPs of growing size (tanh hidden layers, identity output) it compiles, alternating contenders
in one run (A, B, C, A, B, C, ...):
  - hand, compact:     heyoka.model.ffnn written by hand, cfunc(compact_mode=True)
  - hand, non-compact: the same, compact_mode=False
  - polyir auto:       polyir.compile(g, "heyoka") (compact mode chosen from the graph's size)
and reports wall and per-core CPU seconds (process CPU time; LLVM compiles on one core) plus the
time to evaluate 100,000 points. heyoka's compile caches are off (disk) and cleared (memory) before
every compile, so each row is a cold compile.

    .venv/bin/python benchmarks/heyoka_compile.py [--sizes 4-32-32-1,16-64-64-4] [--repeat 2]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import polyir
from polyir import ir

SIZES = ["4-32-32-1", "8-32-32-2", "8-48-48-4", "16-64-64-4", "32-96-96-8"]


def mlp_graph(sizes, seed=0):
    rng = np.random.default_rng(seed)
    nodes = []
    for k, (a, b) in enumerate(zip(sizes, sizes[1:])):
        bound = 1 / np.sqrt(a)
        nodes.append(ir.Affine(rng.uniform(-bound, bound, (b, a)), rng.uniform(-bound, bound, b)))
        if k < len(sizes) - 2:
            nodes.append(ir.Activation("tanh"))
    return ir.Graph.sequential(*nodes)


def snn_graph(n, seed=0):
    """Input(n) -> Affine(n, n) -> CubaLIF(n) -> Output: an ODE of 2n states."""
    rng = np.random.default_rng(seed)
    one = np.ones(n)
    return ir.Graph.sequential(
        ir.Affine(rng.normal(size=(n, n)), rng.normal(size=n)),
        ir.CubaLIF(tau_syn=5e-3 * one, tau_mem=1e-2 * one, r=one, v_leak=0 * one,
                   v_threshold=one, v_reset=0 * one, w_in=one), input_shape=(n,))


def ode_rows(hy, ns, repeat):
    """Taylor integrator (4 batch lanes) compile time, compact vs full, for SNNs of growing
    size."""
    from polyir.importers.heyoka import use_compact_mode
    from polyir.importers.heyoka_ode import to_heyoka_ode
    rows = []
    for n in ns:
        g = snn_graph(n)
        ode = to_heyoka_ode(g)
        res = {True: [], False: []}
        for _ in range(repeat):
            for compact in (True, False):
                cold(hy)
                _, wall, cpu = timed(lambda: ode.batch_integrator(4, compact_mode=compact))
                res[compact].append((wall, cpu))
        for compact, rs in res.items():
            wall, cpu = min(rs)
            rows.append({"snn": n, "parameters": g.parameter_count(), "compact": compact,
                         "compile_wall_s": wall, "compile_cpu_s": cpu,
                         "auto_compact": use_compact_mode(ode.size, "integrator")})
            print(f"SNN {n:>3} neurons {g.parameter_count():>6} params "
                  f"{'compact' if compact else 'full':>8}: compile {wall:6.2f} s wall "
                  f"{cpu:6.2f} s CPU  (polyir picks "
                  f"{'compact' if rows[-1]['auto_compact'] else 'full'})", flush=True)
    return rows


def by_hand(hy, g, sizes, compact):
    """heyoka's ffnn as a user writes it from the graph's arrays."""
    dense = [n for n in g.nodes.values() if isinstance(n, ir.Affine)]
    wb = [float(v) for d in dense for v in d.weight.ravel()]
    wb += [float(v) for d in dense for v in d.bias.ravel()]
    xs = list(hy.make_vars(*[f"x{i}" for i in range(sizes[0])]))
    acts = [hy.tanh] * (len(sizes) - 2) + [lambda e: e]
    out = hy.model.ffnn(xs, list(sizes[1:-1]), sizes[-1], acts, wb)
    return hy.cfunc(out, xs, compact_mode=compact, batch_size=hy.recommended_simd_size())


def cold(hy):
    hy.llvm_state.clear_memcache()  # the disk cache is switched off in main()


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv=None):
    import heyoka as hy
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--snn", default="4,8,16,38", help="SNN sizes for the integrator rows "
                    "('' to skip)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    hy.llvm_state.set_diskcache_enabled(False)
    rows = []
    for spec in filter(None, args.sizes.split(",")):
        sizes = [int(s) for s in spec.split("-")]
        g = mlp_graph(sizes)
        x = np.random.default_rng(1).normal(size=(100_000, sizes[0]))
        contenders = {
            "hand, compact": lambda: by_hand(hy, g, sizes, True),
            "hand, non-compact": lambda: by_hand(hy, g, sizes, False),
            "polyir auto": lambda: polyir.compile(g, "heyoka"),
        }
        results = {name: [] for name in contenders}
        for _ in range(args.repeat):
            for name, make in contenders.items():
                cold(hy)
                prog, wall, cpu = timed(make)
                fn = prog.cfunc if hasattr(prog, "cfunc") else prog
                xt = np.ascontiguousarray(x.T)
                _, ev_wall, _ = timed(lambda: fn(xt))
                mode = prog.compact_mode if hasattr(prog, "compact_mode") else None
                results[name].append((wall, cpu, ev_wall, mode))
        for name, rs in results.items():
            best = min(rs)
            rows.append({"mlp": spec, "parameters": g.parameter_count(), "contender": name,
                         "compile_wall_s": best[0], "compile_cpu_s": best[1],
                         "eval_100k_s": min(r[2] for r in rs), "auto_compact": best[3]})
        print_rows(rows[-3:], header=(len(rows) == 3) and not args.json)
    if args.snn:
        rows += ode_rows(hy, [int(n) for n in args.snn.split(",")], args.repeat)
    if args.json:
        print(json.dumps(rows, indent=2))
    print(f"uptime: {os.popen('uptime').read().strip()}  (2 cores shared with 7 other engineers' "
          "builds and tests: absolute numbers are noisy, compare within a row group)")


def print_rows(rows, header):
    if header:
        print(f"{'mlp':<12} {'params':>7} {'contender':<18} {'compile wall':>12} "
              f"{'compile cpu':>11} {'eval 100k':>9} {'mode':>8}")
    hand = min(r["compile_wall_s"] for r in rows if r["contender"].startswith("hand"))
    for r in rows:
        mode = "" if r["auto_compact"] is None else ("compact" if r["auto_compact"] else "full")
        ratio = f"  {r['compile_wall_s'] / hand:.2f}x best hand" if r["contender"] == \
            "polyir auto" else ""
        print(f"{r['mlp']:<12} {r['parameters']:>7} {r['contender']:<18} "
              f"{r['compile_wall_s']:12.2f} {r['compile_cpu_s']:11.2f} {r['eval_100k_s']:9.4f} "
              f"{mode:>8}{ratio}", flush=True)


if __name__ == "__main__":
    main()
