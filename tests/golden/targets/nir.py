"""Target "nir": the NIR round trip -- polyir.to_nir, nir.write of a .nir file, polyir.load of
that file -- then torch eval. NIR stores no time step or discretization, so the graph's are
passed on as a user would. (nir.read itself refuses some valid files: its type inference ignores
Conv groups and miscounts some strided, asymmetric-kernel Conv2d outputs, so the file is read
with polyir's reader, which opens every file NIR writes.)"""
from __future__ import annotations

import os
import tempfile

import polyir

from . import register_target
from .torch_eval import _torch_program


def _nir_kinds():
    from polyir.exporters.nir import nir_node_rule
    from polyir.importers.nir import nir_rule
    return set(nir_rule.supported()) & set(nir_node_rule.supported())


def prepare_nir(graph):
    import nir
    n = polyir.to_nir(graph)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.nir")
        nir.write(path, n)
        back = polyir.load(path)
    for key in ("dt", "discretization"):  # how to run it: NIR stores neither
        if key in graph.metadata:
            back.metadata[key] = graph.metadata[key]
    return _torch_program(back)


register_target("nir", prepare_nir, _nir_kinds, about="to_nir, nir.write/read, from_nir, torch")
