"""What bounding the loader costs: polyir.load in this process only (timeout=None) against the
default (the file parsed first in a forked child under a time and memory limit, then read here),
alternating A, B, A, B on a small graph and on a 2-million-gate logic graph. Reports wall and
per-core CPU time (this process plus its children) and the load average."""
from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

import polyir
from polyir import ir


def graphs():
    rng = np.random.default_rng(0)
    small = ir.Graph.sequential(ir.Affine(rng.normal(size=(8, 4)).astype(np.float32),
                                          np.zeros(8, np.float32)), ir.Activation("tanh"))
    width, n_in = 1_000_000, 784
    layers = [ir.Binarize(np.array([0.5], np.float32))]
    prev = n_in
    for _ in range(2):
        layers.append(ir.LogicLayer(rng.integers(0, prev, width), rng.integers(0, prev, width),
                                    rng.integers(0, 16, width)))
        prev = width
    layers.append(ir.GroupSum(10))
    big = ir.Graph.sequential(*layers, input_shape=(n_in,))
    return {"small (8x4 MLP)": small, "2M gates": big}


def cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(repeats: int = 5):
    folder = tempfile.mkdtemp(prefix="polyir-bench-")
    print(f"load average {os.getloadavg()}; {os.cpu_count()} cores, shared with other work")
    for label, g in graphs().items():
        path = os.path.join(folder, "g.h5")
        polyir.save(g, path)
        times = {"in-process": [], "isolated": []}
        for _ in range(repeats):
            for mode, timeout in (("in-process", None), ("isolated", "auto")):
                c0, t0 = cpu(), time.perf_counter()
                polyir.load(path, timeout=timeout)
                times[mode].append((time.perf_counter() - t0, cpu() - c0))
        size = os.path.getsize(path)
        for mode, runs in times.items():
            wall = sorted(w for w, _ in runs)[len(runs) // 2]
            cpu_s = sorted(c for _, c in runs)[len(runs) // 2]
            print(f"{label:>16} ({size / 1e6:.2f} MB) {mode:>10}: median wall {wall * 1e3:8.1f} ms,"
                  f" CPU {cpu_s * 1e3:8.1f} ms (of {repeats})")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
