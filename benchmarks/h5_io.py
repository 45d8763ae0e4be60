"""Save/load time and file size of a logic graph: Binarize -> 6 LogicLayers x 8000 gates (with
their 16 trained logits each) -> GroupSum, the size that docs/format.md promises "well under a
second" for.

    .venv/bin/python benchmarks/h5_io.py [--layers 6] [--width 8000] [--repeat 5] [--no-logits]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import polyir
from polyir import ir


def logic_graph(layers: int, width: int, logits: bool, seed: int = 0) -> ir.Graph:
    rng = np.random.default_rng(seed)
    n_in = 100 * 8
    nodes = [ir.Binarize(np.linspace(0.1, 0.9, 8, dtype=np.float32))]
    for _ in range(layers):
        lg = rng.normal(size=(width, 16)).astype(np.float32)
        nodes.append(ir.LogicLayer(rng.integers(0, n_in, width), rng.integers(0, n_in, width),
                                   lg.argmax(-1) if logits else rng.integers(0, 16, width),
                                   logits=lg if logits else None))
        n_in = width
    nodes.append(ir.GroupSum(10, tau=30.0))
    return ir.Graph.sequential(*nodes, input_shape=(100,))


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times)), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=8000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-logits", action="store_true")
    args = ap.parse_args()
    g = logic_graph(args.layers, args.width, not args.no_logits)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "logic.h5")
        save_best, save_med, _ = best(lambda: polyir.save(g, path), args.repeat)
        load_best, load_med, back = best(lambda: polyir.load(path), args.repeat)
        size = os.path.getsize(path)
    assert back == g, "round trip differs"
    gates = args.layers * args.width
    print(f"graph: {args.layers} LogicLayers x {args.width} gates = {gates:,} gates, "
          f"logits {'yes' if not args.no_logits else 'no'}, {len(g.nodes)} nodes")
    print(f"save: best {save_best:.3f} s, median {save_med:.3f} s")
    print(f"load: best {load_best:.3f} s, median {load_med:.3f} s (includes Graph.check)")
    print(f"file: {size:,} bytes ({size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
