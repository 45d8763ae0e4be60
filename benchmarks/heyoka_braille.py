"""The braille CubaLIF network of the NIR paper (12 -> 38 recurrent CubaLIF -> 7 CubaLIF) on
heyoka: first call (compile included) and steady-state runs of 256 steps, batch 4.

Contenders, alternated in one run (A, B, C, A, B, C, ...), each from a cold heyoka compile cache:
  A  the previous path: one scalar Taylor integrator in full (non-compact) mode, compiled on the
     first run, the batch looped over in Python (written out here as it was)
  B  polyir.compile(g, "heyoka", dt=1e-4): compiled inside compile(), compact mode chosen from
     the size, the graph's float32, heyoka's batch mode with spike events (SIMD-wide lanes)
  C  the same with dtype="float64", batch_size=4 (one lane per sequence)
Reported: compile seconds, first call (compile + run), a second run, per-core CPU seconds
(process CPU time / wall) and whether the spike times agree with A (same spikes per sequence,
neuron and index; largest time difference).

    .venv/bin/python benchmarks/heyoka_braille.py [--repeat 2] [--skip-old]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import polyir
from heyoka_compile import timed  # benchmarks/ is the script's folder
from polyir.importers.heyoka_ode import to_heyoka_ode

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "tests" / "data" / "nir" / "braille_noDelay_bias_zero.nir"
DT, STEPS, BATCH = 1e-4, 256, 4


def old_path(g, x):
    """The path before compile-time integrators: scalar, full mode, a Python loop over the
    batch; returns (per-sequence spike lists, the integrator)."""
    ode = to_heyoka_ode(g)
    ta = ode.integrator(compact_mode=False)
    return old_run(ode, ta, x), (ode, ta)


def old_run(ode, ta, x):
    import heyoka as hy
    ode.charge = DT
    spikes = []
    for b in range(x.shape[1]):
        ta.time = 0.0
        ta.state[:] = 0.0
        ta.reset_cooldowns()
        ode.record = [[]]
        for k in range(x.shape[0]):
            ta.pars[:] = x[k, b]
            outcome = ta.propagate_until((k + 1) * DT)[0]
            assert outcome == hy.taylor_outcome.time_limit
        spikes.append(list(ode.record[0]))
    return spikes


def new_path(g, x, **options):
    """(program, first call = compile() + first run in wall seconds, second run)."""
    t0 = time.perf_counter()
    prog = polyir.compile(g, "heyoka", dt=DT, **options)
    prog.run(x)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    prog.run(x)
    return prog, first, time.perf_counter() - t0


def compare(ref, got):
    """(same spikes?, max |time difference|) between two per-sequence spike lists."""
    same, worst = True, 0.0
    for a, b in zip(ref, got):
        key = lambda s: (s[1], s[2], s[0])  # noqa: E731 - sort by neuron, index, time
        a, b = sorted(a, key=key), sorted(b, key=key)
        if [(n, i) for _, n, i in a] != [(n, i) for _, n, i in b]:
            return False, float("nan")
        if a:
            worst = max(worst, max(abs(s[0] - t[0]) for s, t in zip(a, b)))
    return same, worst


def main(argv=None):
    import heyoka as hy
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-old", action="store_true", help="leave out A (20+ s per compile)")
    args = ap.parse_args(argv)
    hy.llvm_state.set_diskcache_enabled(False)
    g = polyir.load(FILE)
    x = (np.random.default_rng(0).random((STEPS, BATCH, 12)) < 0.3).astype(np.float32)
    print(f"braille CubaLIF, {STEPS} steps x batch {BATCH}, dt {DT}; heyoka {hy.__version__}, "
          f"{os.cpu_count()} CPUs; uptime: {os.popen('uptime').read().strip()}")
    print("(the machine's 2 cores are shared with 7 other engineers' builds and tests: wall times "
          "are noisy; compare contenders within a round)")
    ref = None
    for rnd in range(args.repeat):
        if not args.skip_old:
            hy.llvm_state.clear_memcache()
            (spikes, (ode, ta)), wall, cpu = timed(lambda: old_path(g, x.astype(np.float64)))
            _, again, _ = timed(lambda: old_run(ode, ta, x.astype(np.float64)))
            ref = ref or spikes
            print(f"round {rnd}  A old path        first call {wall:6.2f} s wall "
                  f"{cpu:6.2f} s CPU ({cpu / wall:.2f} cores), second run {again:5.2f} s; "
                  f"spikes {[len(s) for s in spikes]}", flush=True)
        for label, opts in (("B compile default ", {}),
                            ("C float64, 4 lanes", {"dtype": "float64", "batch_size": 4})):
            hy.llvm_state.clear_memcache()
            (prog, first, run2), wall, cpu = timed(lambda: new_path(g, x, **opts))
            spikes = prog.last_run.spikes
            agree = "" if ref is None else "  same spikes as A: %s (max |dt| %.1e s)" % compare(
                ref, spikes)
            print(f"round {rnd}  {label} {prog!r}: compile {prog.compile_seconds:5.2f} s, first "
                  f"call {first:5.2f} s, second run {run2:5.2f} s; {cpu:6.2f} s CPU for "
                  f"{wall:6.2f} s wall ({cpu / wall:.2f} cores); spikes "
                  f"{[len(s) for s in spikes]}{agree}", flush=True)
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
