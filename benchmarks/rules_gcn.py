"""RuleLayer vs plain torch sparse ops (vs PyNeuraLogic where installed) on a 2-layer GCN-style
template over random graphs: forward + backward per epoch, CPU.

    .venv/bin/python benchmarks/rules_gcn.py [--graphs 1000] [--batch 100] [--epochs 5]

The template (normalisation carried by the edge facts' values, see tests/test_rules.py):

    h1(X) :- $w1={H, D} feat(Y), edge(X, Y). [combination=elproduct, aggregation=sum]
    h1/1 [transformation=relu]
    h2(X) :- $w2={H, H} h1(Y), edge(X, Y). [combination=elproduct, aggregation=sum]
    $w3={1, H} out :- h2(X).                        (avg readout per graph)

so out = w3 . mean_nodes(N relu(N X W1^T) W2^T), N = D^-1/2 (A + I) D^-1/2. The torch baseline
computes exactly that with torch.sparse.mm on a block-diagonal N per batch (built once, as the
layer's grounding is cached once), and a segment mean by index_add_.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from polyir.nn.rules import RuleLayer

TEMPLATE = """\
h1(X) :- $w1={{{h}, {d}}} feat(Y), edge(X, Y). [combination=elproduct, aggregation=sum]
h1/1 [transformation=relu]
h2(X) :- $w2={{{h}, {h}}} h1(Y), edge(X, Y). [combination=elproduct, aggregation=sum]
$w3={{1, {h}}} out :- h2(X).
"""


def make_graphs(n_graphs, d, seed=0):
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(n_graphs):
        n = int(rng.integers(20, 41))
        a = np.triu(rng.random((n, n)) < 4.0 / n, 1)
        a = a | a.T
        ahat = a + np.eye(n, dtype=bool)
        deg = ahat.sum(1).astype(np.float64)
        i, j = np.nonzero(ahat)
        coef = (1.0 / np.sqrt(deg[i] * deg[j])).astype(np.float32)
        graphs.append((rng.normal(size=(n, d)).astype(np.float32), np.stack([i, j], 1), coef))
    return graphs, rng.integers(0, 2, n_graphs).astype(np.float32)


def batch_inputs(graphs):
    """RuleLayer's batched (values, args, sample) form."""
    fv, fa, fs, ev, ea, es = [], [], [], [], [], []
    for s, (x, pairs, coef) in enumerate(graphs):
        fv.append(x)
        fa.append(np.arange(len(x))[:, None])
        fs.append(np.full(len(x), s))
        ev.append(coef[:, None])
        ea.append(pairs)
        es.append(np.full(len(pairs), s))
    return {"feat": (torch.from_numpy(np.concatenate(fv)), np.concatenate(fa), np.concatenate(fs)),
            "edge": (torch.from_numpy(np.concatenate(ev)), np.concatenate(ea), np.concatenate(es))}


def torch_batch(graphs):
    """Block-diagonal sparse N (CSR), features, node -> graph index."""
    rows, cols, vals, xs, seg = [], [], [], [], []
    off = 0
    for s, (x, pairs, coef) in enumerate(graphs):
        rows.append(pairs[:, 0] + off)
        cols.append(pairs[:, 1] + off)
        vals.append(coef)
        xs.append(x)
        seg.append(np.full(len(x), s))
        off += len(x)
    idx = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(cols)]))
    n = torch.sparse_coo_tensor(idx, torch.from_numpy(np.concatenate(vals)), (off, off))
    n = n.coalesce().to_sparse_csr()
    seg = torch.from_numpy(np.concatenate(seg))
    counts = torch.bincount(seg, minlength=len(graphs)).float()
    return n, torch.from_numpy(np.concatenate(xs)), seg, counts


def torch_forward(n, x, seg, counts, w1, w2, w3, n_graphs):
    h1 = torch.relu(torch.sparse.mm(n, x @ w1.T))
    h2 = torch.sparse.mm(n, h1 @ w2.T)
    pooled = h2.new_zeros((n_graphs, h2.shape[1])).index_add_(0, seg, h2) / counts[:, None]
    return pooled @ w3.T


def time_interleaved(runs, epochs):
    """Seconds per epoch of each (step, batches), epochs interleaved so that load on a shared
    machine hits every contender alike."""
    times = [[] for _ in runs]
    for _ in range(epochs):
        for k, (step, batches) in enumerate(runs):
            t = time.perf_counter()
            for b in batches:
                step(b)
            times[k].append(time.perf_counter() - t)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--graphs", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100, help="graphs per forward call")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--neuralogic-graphs", type=int, default=100,
                    help="graphs for the (much slower) PyNeuraLogic run; 0 skips it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    graphs, labels = make_graphs(args.graphs, args.dim)
    chunks = [list(range(i, min(i + args.batch, args.graphs)))
              for i in range(0, args.graphs, args.batch)]
    layer = RuleLayer(TEMPLATE.format(h=args.hidden, d=args.dim), seed=0)
    y = torch.from_numpy(labels)[:, None]

    # --- polyir RuleLayer ---
    rl_batches = [(batch_inputs([graphs[i] for i in c]), y[c]) for c in chunks]
    t = time.perf_counter()
    for inp, _ in rl_batches:  # the first epoch grounds each batch once (then cached)
        layer(inp)
    ground_s = time.perf_counter() - t

    def rl_step(b):
        inp, target = b
        layer.zero_grad()
        loss = ((layer(inp) - target) ** 2).mean()
        loss.backward()


    # --- plain torch, same weights ---
    w1, w2, w3 = (layer.weights[k].detach().clone().requires_grad_(True) for k in ("w1", "w2", "w3"))
    t_batches = []
    t = time.perf_counter()
    for c in chunks:
        t_batches.append((torch_batch([graphs[i] for i in c]), y[c], len(c)))
    prep_s = time.perf_counter() - t

    def torch_step(b):
        (n, x, seg, counts), target, k = b
        for w in (w1, w2, w3):
            w.grad = None
        loss = ((torch_forward(n, x, seg, counts, w1, w2, w3, k) - target) ** 2).mean()
        loss.backward()

    rl_step(rl_batches[0])  # warm both up
    torch_step(t_batches[0])
    rl_times, torch_times = time_interleaved([(rl_step, rl_batches), (torch_step, t_batches)],
                                             args.epochs)

    # same numbers?
    (n, x, seg, counts), _, k = t_batches[0]
    ref = torch_forward(n, x, seg, counts, w1, w2, w3, k)
    diff = float((layer(rl_batches[0][0]) - ref).abs().max().detach())

    rows = [("polyir RuleLayer", min(rl_times), np.median(rl_times), f"grounding once {ground_s:.2f} s"),
            ("torch sparse (CSR)", min(torch_times), np.median(torch_times),
             f"building N once {prep_s:.2f} s")]
    nl = neuralogic_epoch(graphs[:args.neuralogic_graphs], labels, args) \
        if args.neuralogic_graphs else None
    print(f"{args.graphs} graphs of 20-40 nodes, batches of {args.batch}, dim {args.dim}, hidden "
          f"{args.hidden}, {args.threads} thread(s), forward+backward per epoch, best / median "
          f"of {args.epochs}")
    print(f"{'':22s} {'best s':>9s} {'median s':>9s}  note")
    for name, best, med, note in rows:
        print(f"{name:22s} {best:9.4f} {med:9.4f}  {note}")
    if nl is not None:
        per, n_g, build = nl
        scaled = per * args.graphs / n_g
        how = (f"measured on {n_g} graphs ({per:.3f} s), scaled" if n_g != args.graphs
               else "one training epoch (includes its weight update)")
        print(f"{'PyNeuraLogic (JVM)':22s} {scaled:9.4f} {'':9s}  {how}; building {build:.1f} s")
    ratio = min(rl_times) / min(torch_times)
    print(f"RuleLayer / torch = {ratio:.2f}x   (max |difference| {diff:.2e})")
    if nl is not None:
        print(f"PyNeuraLogic / RuleLayer = {nl[0] * args.graphs / nl[1] / min(rl_times):.0f}x")


def neuralogic_epoch(graphs, labels, args):
    """Seconds for one training epoch (forward + backward + update) in PyNeuraLogic, or None."""
    try:
        import logging
        from neuralogic.core import Aggregation as A, Combination as C, Model, R, Settings
        from neuralogic.core import Transformation as T, V
        from neuralogic.dataset import Dataset
    except Exception:
        return None
    logging.disable(logging.WARNING)
    X, Y = V.X, V.Y
    h, d = args.hidden, args.dim
    m = Model()
    m.add_rules([
        (R.h1(X) <= (R.feat(Y)["w1": h, d], R.edge(X, Y))) | [C.ELPRODUCT, A.SUM],
        R.h1 / 1 | [T.RELU],
        (R.h2(X) <= (R.h1(Y)["w2": h, h], R.edge(X, Y))) | [C.ELPRODUCT, A.SUM],
        R.out["w3": 1, h] <= R.h2(X),
    ])
    m.build(Settings(chain_pruning=False, iso_value_compression=False))
    ds = Dataset()
    for (x, pairs, coef), lab in zip(graphs, labels):
        ex = [R.feat(i)[x[i].tolist()] for i in range(len(x))]
        ex += [R.edge(int(a), int(b))[float(c)] for (a, b), c in zip(pairs, coef)]
        ds.add(R.out[float(lab)], ex)
    t = time.perf_counter()
    built = m.build_dataset(ds)
    build_s = time.perf_counter() - t
    m.train(built, epochs=1)  # warm-up
    t = time.perf_counter()
    m.train(built, epochs=1)
    return time.perf_counter() - t, len(graphs), build_s


if __name__ == "__main__":
    main()
