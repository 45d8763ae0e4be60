"""Graph classification with relational rules and PyNeuraLogic-style data: samples of facts
with named constants, one query with a target per sample, batched for training.

Each sample is a small random graph whose nodes are named by strings; its label says whether
the graph has a triangle. The template is two GCN-like message-passing rules and a readout:

    h1(X) :- {8, 3} feat(Y), *edge(X, Y).  [aggregation=avg]   h1/1 [transformation=tanh]
    h2(X) :- {8, 8} h1(Y), *edge(X, Y).    [aggregation=avg]   h2/1 [transformation=tanh]
    {1, 8} label :- h2(X).                                     label/0 [transformation=sigmoid]

    .venv/bin/python examples/rules_graphs.py
"""
from __future__ import annotations

import numpy as np
import torch

from polyir.nn.rule_builder import Aggregation, R, Template, Transformation, V
from polyir.nn.rule_data import Dataset, Sample
from polyir.nn.rules import RuleLayer


def random_sample(rng) -> Sample:
    n = int(rng.integers(4, 8))
    names = [f"n{i}" for i in range(n)]
    adj = np.triu(rng.random((n, n)) < 0.35, 1)
    adj = adj | adj.T
    triangle = bool(np.trace(np.linalg.matrix_power(adj.astype(int), 3)) > 0)
    facts = [R.feat(names[i])[[1.0, float(adj[i].sum()), float(i == 0)]] for i in range(n)]
    facts += [R.edge(names[i], names[j]) for i, j in zip(*np.nonzero(adj))]
    return Sample(R.label[float(triangle)], facts)


def main(samples: int = 400, epochs: int = 30) -> float:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    data = Dataset([random_sample(rng) for _ in range(samples)])
    X, Y = V.X, V.Y
    template = Template([
        (R.h1(X) <= (R.feat(Y)[8, 3], R.hidden.edge(X, Y))) | [Aggregation.AVG],
        R.h1 / 1 | [Transformation.TANH],
        (R.h2(X) <= (R.h1(Y)[8, 8], R.hidden.edge(X, Y))) | [Aggregation.AVG],
        R.h2 / 1 | [Transformation.TANH],
        R.label[1, 8] <= R.h2(X),
        R.label / 0 | [Transformation.SIGMOID],
    ])
    layer = RuleLayer(template)
    opt = torch.optim.Adam(layer.parameters(), lr=0.02)
    split = samples * 3 // 4
    train, test = data[:split], data[split:]

    def train_loss():
        with torch.no_grad():
            return float(torch.nn.functional.binary_cross_entropy(layer(train),
                                                                  train.targets()))
    before = train_loss()
    for epoch in range(epochs):
        for batch in train.batches(50):  # the same batches every epoch: grounded once each
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy(layer(batch), batch.targets())
            loss.backward()
            opt.step()
    after = train_loss()
    with torch.no_grad():
        acc = ((layer(test) > 0.5).float() == test.targets()).float().mean()
    print(f"training loss {before:.3f} -> {after:.3f}; test accuracy {float(acc):.2f} "
          f"(majority class {float(max(test.targets().mean(), 1 - test.targets().mean())):.2f})"
          f"; groundings cached: {layer.cache.hits} hits, {layer.cache.misses} misses")
    assert after < before, "training did not lower the loss"
    return after


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=30)
    a = ap.parse_args()
    main(a.samples, a.epochs)
