"""Targets "torch" (polyir.to_torch(graph).eval()) and "h5" (save, load, then the same)."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

import polyir

from . import register_target


def _torch_kinds():
    from polyir.importers.torch import torch_rule
    return {k.__name__ for k in torch_rule.rules}


def run_torch(graph, inputs):
    m = polyir.to_torch(graph).eval()
    xs = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
    with torch.no_grad():
        out = m.run(*xs) if m.stateful else m(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    return [o.detach().cpu().numpy() for o in outs]


def run_h5(graph, inputs):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.h5")
        polyir.save(graph, path)
        return run_torch(polyir.load(path), inputs)


register_target("torch", run_torch, _torch_kinds)
register_target("h5", run_h5, _torch_kinds)
