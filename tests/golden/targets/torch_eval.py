"""Targets "torch" (polyir.to_torch(graph).eval()), "torch_train" (the same module in train mode:
relaxed logic gates) and "h5" (save, load, then torch eval)."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

import polyir

from . import outputs, register_target
from .. import RELAXING_KINDS


def _torch_kinds():
    from polyir.importers.torch import torch_rule
    return set(torch_rule.supported())


def _tensor(x):
    if isinstance(x, tuple):  # a relation: (values or None, args)
        return tuple(None if a is None else torch.from_numpy(np.ascontiguousarray(a)) for a in x)
    return torch.from_numpy(np.ascontiguousarray(x))


def _torch_program(graph, train: bool = False):
    m = polyir.to_torch(graph).train(train)

    def run(inputs):
        with torch.no_grad():
            xs = [_tensor(x) for x in inputs]
            return outputs(m.run(*xs) if m.stateful else m(*xs))
    return run


def prepare_h5(graph):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.h5")
        polyir.save(graph, path)
        return _torch_program(polyir.load(path))


def relaxed_reference(case):
    """Train mode answers to the case's relaxed reference; kinds without a relaxed form compute
    their eval outputs in train mode too."""
    if case.relaxed is not None:
        return case.relaxed, max(case.rtol, 1e-5), max(case.atol, 1e-6)
    if case.kinds & RELAXING_KINDS:
        return None
    return case.expected, case.rtol, case.atol


register_target("torch", _torch_program, _torch_kinds, about="polyir.to_torch(g).eval()")
register_target("torch_train", lambda g: _torch_program(g, train=True), _torch_kinds,
                reference=relaxed_reference, about="polyir.to_torch(g).train()")
register_target("h5", prepare_h5, _torch_kinds, about="save, load, torch eval")
