"""PyNeuraLogic's XOR inside a torch model: a relational rule layer between torch layers,
trained, exported to a polyir graph, saved, loaded and brought back as a torch module.

The rule `{1, 8} xor :- {8, 2} xy.` is one hidden layer of 8 units written as a weighted rule;
the torch layers around it feed its input predicate `xy` (an arity-0 predicate takes a
(batch, 2) tensor) and read its query `xor`.

    .venv/bin/python examples/rules_xor.py
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

import polyir
from polyir.nn.rule_builder import R, Template, Transformation
from polyir.nn.rules import RuleLayer


def main():
    torch.manual_seed(0)
    template = Template([R.xor[1, 8] <= R.xy[8, 2], R.xor / 0 | [Transformation.IDENTITY]])
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), RuleLayer(template), nn.Sigmoid())
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    print("trained:", model(x).detach().reshape(-1).numpy().round(3), "loss", loss.item())
    graph = polyir.export(model, x)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "xor.h5"
        polyir.save(graph, path)
        back = polyir.to_torch(polyir.load(path))
    same = torch.equal(back(x), model(x))
    print("exported, saved, loaded, re-imported; same outputs:", same)
    assert same


if __name__ == "__main__":
    main()
