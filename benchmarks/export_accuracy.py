"""Accuracy of exported everyday models (not a speed benchmark): for each model of the zoo test
(tests/test_zoo.py), the largest |difference| between the torch model in eval mode and polyir's
torch importer, C backend and heyoka (the stateless smooth ones), after a save / load; the loss
of the imported module over 8 more Adam steps; and the BatchNorm folding error on larger layers.

    .venv/bin/python benchmarks/export_accuracy.py
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import torch
from torch import nn

import polyir

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import test_zoo as zoo  # noqa: E402 - the models live with their test


def zoo_rows():
    for name, (factory, shape, probabilities, smooth) in sorted(zoo.ZOO.items()):
        torch.manual_seed(0)
        model = factory()
        x, y = zoo.data(shape, 1)
        zoo.train(model, x, y, probabilities, steps=4)
        model.eval()
        g = polyir.export(model, x[:2])
        with tempfile.TemporaryDirectory() as d:
            polyir.save(g, os.path.join(d, "m.h5"))
            g = polyir.load(os.path.join(d, "m.h5"))
        with torch.no_grad():
            want = model(x)
            got = polyir.to_torch(g).eval()(x)
        row = [name, f"to_torch {float((got - want).abs().max()):.2e}",
               f"C {float(np.abs(polyir.compile(g, 'c')(x.numpy()) - want.numpy()).max()):.2e}"]
        if smooth:
            h = polyir.compile(g, "heyoka")(x.numpy().astype(np.float64))
            row.append(f"heyoka {float(np.abs(h - want.numpy()).max()):.2e}")
        losses = zoo.train(polyir.to_torch(g), x, y, probabilities, steps=8)
        row.append(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
        yield " | ".join(row)


def batchnorm_rows():
    torch.manual_seed(0)
    for layer, bn, x in ((nn.Conv2d(8, 16, 3, bias=False), nn.BatchNorm2d(16),
                          torch.randn(64, 8, 12, 12)),
                         (nn.Linear(32, 16), nn.BatchNorm1d(16), torch.randn(256, 32))):
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.1, 3)
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
        model = nn.Sequential(layer, bn).eval()
        g = polyir.export(model, x[:2])
        with torch.no_grad():
            want, got = model(x), polyir.to_torch(g)(x)
        yield (f"{type(layer).__name__} + {type(bn).__name__} folded: max |diff| "
               f"{float((got - want).abs().max()):.2e} for outputs up to "
               f"{float(want.abs().max()):.2f}")


if __name__ == "__main__":
    for line in zoo_rows():
        print(line)
    for line in batchnorm_rows():
        print(line)
