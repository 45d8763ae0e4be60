"""Relaxed LogicLayer, forward + backward: polyir's 4-coefficient form against the naive 16-term
softmax mixture (difflogic's formulation: evaluate all 16 relaxed gates, weight each by its softmax
probability, sum).

    .venv/bin/python benchmarks/logic_relaxed.py [--batch 1024] [--neurons 4096] [--repeat 5]

(4096 neurons keep the run near 30 s on 2 busy cores; --neurons 65536 needs ~5 GB and minutes.)

Every relaxed gate is c0 + c1 a + c2 b + c3 ab, so polyir mixes the softmax into 4 coefficients
per neuron (a (out, 16) @ (16, 4) product) and evaluates one bilinear form per output, instead of
16 gate relaxations. Prints both times side by side and the speed-up; checks that they agree.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from polyir.nn import LogicLayer

RELAXED = [
    lambda a, b: torch.zeros_like(a),
    lambda a, b: a * b,
    lambda a, b: a - a * b,
    lambda a, b: a,
    lambda a, b: b - a * b,
    lambda a, b: b,
    lambda a, b: a + b - 2 * a * b,
    lambda a, b: a + b - a * b,
    lambda a, b: 1 - (a + b - a * b),
    lambda a, b: 1 - (a + b - 2 * a * b),
    lambda a, b: 1 - b,
    lambda a, b: 1 - b + a * b,
    lambda a, b: 1 - a,
    lambda a, b: 1 - a + a * b,
    lambda a, b: 1 - a * b,
    lambda a, b: torch.ones_like(a),
]


def naive_forward(layer: LogicLayer, x: torch.Tensor) -> torch.Tensor:
    a, b = torch.index_select(x, 1, layer.a), torch.index_select(x, 1, layer.b)  # same gather
    p = torch.softmax(layer.logits, -1)
    y = torch.zeros_like(a)
    for g in range(16):
        y = y + p[:, g] * RELAXED[g](a, b)
    return y


def polyir_forward(layer: LogicLayer, x: torch.Tensor) -> torch.Tensor:
    return layer(x)


def once(fn, layer, x, grad):
    layer.zero_grad(set_to_none=True)
    x.grad = None
    t0 = time.perf_counter()
    y = fn(layer, x)
    t1 = time.perf_counter()
    (y * grad).sum().backward()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0, (y.detach(), layer.logits.grad.clone(), x.grad.clone())


def timed_pair(forms, layer, x, grad, repeat):
    """Alternate the forms run by run (the machine's load hits both alike); after one warm-up
    run each: {name: (forward times, fwd+bwd times)} and the last outputs."""
    times = {name: ([], []) for name in forms}
    outs = {}
    for i in range(repeat + 1):
        for name, fn in forms.items():
            f, t, outs[name] = once(fn, layer, x, grad)
            if i:
                times[name][0].append(f)
                times[name][1].append(t)
    return times, outs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--neurons", type=int, default=4096, help="layer width (= input width)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layer = LogicLayer(args.neurons, args.neurons, seed=0).train()
    x = torch.rand(args.batch, args.neurons, requires_grad=True)
    grad = torch.randn(args.batch, args.neurons)
    forms = {"polyir 4-coefficient": polyir_forward, "naive 16-term softmax sum": naive_forward}
    times, outs = timed_pair(forms, layer, x, grad, args.repeat)
    f_out, n_out = outs.values()
    diffs = [(a - b).abs().max().item() for a, b in zip(f_out, n_out)]
    print(f"relaxed LogicLayer {args.neurons:,} -> {args.neurons:,} neurons, batch {args.batch:,}, "
          f"float32, {torch.get_num_threads()} torch thread(s); {args.repeat} runs each, "
          "alternating; ms as min / median")
    print(f"{'form':<28} {'forward ms':>16} {'fwd+bwd ms':>16}")
    for name, (fwd, tot) in times.items():
        print(f"{name:<28} {1e3 * min(fwd):>7.1f} / {1e3 * statistics.median(fwd):>6.1f} "
              f"{1e3 * min(tot):>7.1f} / {1e3 * statistics.median(tot):>6.1f}")
    (ff, ft), (nf, nt) = times.values()
    print(f"{'speed-up (naive / polyir)':<28} {min(nf) / min(ff):>6.1f}x / "
          f"{statistics.median(nf) / statistics.median(ff):>5.1f}x "
          f"{min(nt) / min(ft):>6.1f}x / {statistics.median(nt) / statistics.median(ft):>5.1f}x")
    print(f"max |difference|: output {diffs[0]:.2e}, d logits {diffs[1]:.2e}, d x {diffs[2]:.2e}")
    if max(diffs) > 1e-3:
        raise SystemExit("the two forms disagree")


if __name__ == "__main__":
    main()
