"""RuleLayer vs plain torch sparse ops (vs PyNeuraLogic where installed) on a 2-layer GCN-style
template: grounding, forward, forward+backward at 1k / 10k / 100k small graphs and one 100k-node
graph, wall and CPU seconds and peak memory, CPU.

    .venv/bin/python benchmarks/rules_gcn.py [--sizes 1000,10000,100000] [--big 100000]

Each scenario runs in its own process (its peak RSS is its own); grounding's peak is traced with
tracemalloc (numpy's allocations). RuleLayer and the torch baseline alternate (A, B, A, B).
PyNeuraLogic (1k graphs by default) reports its dataset building (its grounding) and one epoch.

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
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
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


def big_graph(n, d, seed=0):
    """One graph of n nodes, ~4 random neighbours each (undirected) plus self loops, GCN-normed."""
    rng = np.random.default_rng(seed)
    m = 2 * n
    a, b = rng.integers(0, n, m), rng.integers(0, n, m)
    keep = a != b
    pairs = np.unique(np.concatenate([np.stack([a[keep], b[keep]], 1),
                                      np.stack([b[keep], a[keep]], 1),
                                      np.stack([np.arange(n)] * 2, 1)]), axis=0)
    deg = np.bincount(pairs[:, 0], minlength=n).astype(np.float64)
    coef = (1.0 / np.sqrt(deg[pairs[:, 0]] * deg[pairs[:, 1]])).astype(np.float32)
    return [(rng.normal(size=(n, d)).astype(np.float32), pairs, coef)], \
        rng.integers(0, 2, 1).astype(np.float32)


def clock():
    return time.perf_counter(), time.process_time()


def since(start):
    wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
    return wall, cpu


def scenario(name, graphs, labels, args):
    """Grounding, forward, forward+backward of one batch holding every graph, RuleLayer and the
    torch sparse baseline alternated (A, B, A, B); returns a dict of numbers."""
    import tracemalloc
    layer = RuleLayer(TEMPLATE.format(h=args.hidden, d=args.dim), seed=0, progress=False)
    inp = batch_inputs(graphs)
    facts, _, batch = layer._normalise(inp, {}, None)
    tracemalloc.start()
    t = clock()
    layer.engine.ground(facts, batch)
    g_wall, g_cpu = since(t)
    g_peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    layer(inp)  # grounds once more into the layer's cache (not timed)
    w1, w2, w3 = (layer.weights[k].detach().clone().requires_grad_(True)
                  for k in ("w1", "w2", "w3"))
    tb = torch_batch(graphs)
    y = torch.from_numpy(labels)[:, None]

    def rl(backward):
        out = layer(inp)
        if backward:
            layer.zero_grad()
            ((out - y) ** 2).mean().backward()
        return out

    def tr(backward):
        n, x, seg, counts = tb
        out = torch_forward(n, x, seg, counts, w1, w2, w3, len(graphs))
        if backward:
            for w in (w1, w2, w3):
                w.grad = None
            ((out - y) ** 2).mean().backward()
        return out

    diff = float((rl(False) - tr(False)).abs().max().detach())
    res = {"name": name, "graphs": len(graphs), "nodes": int(sum(len(g[0]) for g in graphs)),
           "edges": int(sum(len(g[1]) for g in graphs)), "ground_wall": g_wall,
           "ground_cpu": g_cpu, "ground_peak_mb": g_peak, "max_diff": diff}
    for backward in (False, True):
        key = "fwdbwd" if backward else "fwd"
        times = {"rl": [], "torch": []}
        for _ in range(args.reps):
            for who, fn in (("rl", rl), ("torch", tr)):
                t = clock()
                with torch.set_grad_enabled(backward):
                    fn(backward)
                times[who].append(since(t))
        for who in times:
            res[f"{key}_{who}_wall"] = min(w for w, _ in times[who])
            res[f"{key}_{who}_cpu"] = min(c for _, c in times[who])
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000",
                    help="numbers of small graphs (20-40 nodes), comma-separated")
    ap.add_argument("--big", type=int, default=100000, help="nodes of the one big graph; 0 skips")
    ap.add_argument("--reps", type=int, default=2, help="alternated repetitions (best is kept)")
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--neuralogic-graphs", type=int, default=1000,
                    help="graphs for the PyNeuraLogic run (where installed); 0 skips it")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # run one scenario in this process
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        kind, n = args.one.split(":")
        graphs, labels = (big_graph if kind == "big" else make_graphs)(int(n), args.dim)
        print(json.dumps(scenario(f"{kind} {n}", graphs, labels, args)))
        return
    print("uptime:", os.popen("uptime").read().strip())
    jobs = [f"small:{n}" for n in args.sizes.split(",") if n] + \
        ([f"big:{args.big}"] if args.big else [])
    rows = []
    for job in jobs:  # one process per scenario: peak memory is that scenario's own
        cmd = [sys.executable, __file__, "--one", job, "--reps", str(args.reps), "--dim",
               str(args.dim), "--hidden", str(args.hidden), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(f"{job}: failed\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"dim {args.dim}, hidden {args.hidden}, {args.threads} thread(s); wall / CPU seconds "
          f"(best of {args.reps}, RuleLayer and torch alternated); one batch holds every graph")
    head = (f"{'scenario':14s} {'nodes':>9s} {'edges':>10s} {'ground':>14s} {'peak MB':>8s} "
            f"{'fwd RuleLayer':>14s} {'fwd torch':>14s} {'f+b RuleLayer':>14s} "
            f"{'f+b torch':>14s} {'RSS MB':>7s}")
    print(head)
    for r in rows:
        cell = lambda k: f"{r[k + '_wall']:6.2f}/{r[k + '_cpu']:6.2f}"  # noqa: E731
        print(f"{r['name']:14s} {r['nodes']:9d} {r['edges']:10d} {cell('ground'):>14s} "
              f"{r['ground_peak_mb']:8.0f} {cell('fwd_rl'):>14s} {cell('fwd_torch'):>14s} "
              f"{cell('fwdbwd_rl'):>14s} {cell('fwdbwd_torch'):>14s} {r['peak_rss_mb']:7.0f}"
              f"   max |diff| {r['max_diff']:.1e}")
    if args.neuralogic_graphs:
        graphs, labels = make_graphs(args.neuralogic_graphs, args.dim)
        with contextlib.redirect_stdout(io.StringIO()):  # the JVM's per-sample log lines
            nl = neuralogic_epoch(graphs, labels, args)
        if nl is None:
            print("PyNeuraLogic: not installed")
        else:
            per, n_g, build = nl
            print(f"PyNeuraLogic {n_g} graphs: building (grounding) {build[0]:.2f}/"
                  f"{build[1]:.2f} s wall/CPU, one training epoch (forward+backward+update) "
                  f"{per[0]:.2f}/{per[1]:.2f} s wall/CPU (the JVM runs inside this process, so "
                  "its threads count in the CPU time)")
    print("uptime:", os.popen("uptime").read().strip())


def neuralogic_epoch(graphs, labels, args):
    """(wall, CPU) of one training epoch (forward + backward + update) in PyNeuraLogic, the
    number of graphs, (wall, CPU) of building the dataset (its grounding); or None."""
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
    t = clock()
    built = m.build_dataset(ds)
    build = since(t)
    m.train(built, epochs=1)  # warm-up
    t = clock()
    m.train(built, epochs=1)
    return since(t), len(graphs), build


if __name__ == "__main__":
    main()
