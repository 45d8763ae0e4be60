"""Compare a polyir graph with a nir.NIRGraph field by field (shared by the NIR tests)."""
from __future__ import annotations

import dataclasses

import numpy as np

from polyir import ir


def nir_fields(node) -> dict:
    """A NIR node's values under polyir's field names."""
    name = type(node).__name__
    if name == "Input":
        return {"shape": node.input_type["input"]}
    if name == "Output":
        return {"shape": node.output_type["output"]}
    out = {}
    kind = ir.KINDS[name]
    polyir_only = kind.option_fields() if issubclass(kind, ir.Neuron) else ()
    for f in dataclasses.fields(kind):
        if f.name == "metadata" or f.name in polyir_only or (
                f.name in getattr(kind, "omit_when_default", ()) and not hasattr(node, f.name)):
            continue  # extension fields NIR does not have
        if name == "Flatten" and f.name == "input_type":
            out[f.name] = node.input_type["input"]
        else:
            out[f.name] = getattr(node, f.name)
    return out


def assert_nir_equal(p_graph: ir.Graph, n_graph, inferred=None):
    """polyir graph == NIR graph: same node names and types, field values, edges, metadata."""
    assert type(n_graph).__name__ == "NIRGraph"
    assert sorted(p_graph.nodes) == sorted(n_graph.nodes)
    assert sorted(map(tuple, p_graph.edges)) == sorted(map(tuple, n_graph.edges))
    for k, v in p_graph.metadata.items():
        theirs = n_graph.metadata[k]
        assert theirs == v or np.array_equal(np.asarray(theirs), np.asarray(v)), k
    types = p_graph.infer_types()
    fed = {e[1]: types[e[0]] for e in p_graph.edges}
    for name, pn in p_graph.nodes.items():
        nn = n_graph.nodes[name]
        if isinstance(pn, ir.Graph):
            assert_nir_equal(pn, nn)
            continue
        assert type(nn).__name__ == type(pn).file_type
        for field, value in nir_fields(nn).items():
            mine = getattr(pn, field)
            if mine is None and field == "input_shape":       # written inferred for NIR
                mine = fed[name].shape[1:]
                mine = mine[0] if len(mine) == 1 else mine
            if mine is None and field == "bias" and "Conv" in type(pn).file_type:
                mine = np.zeros(pn.weight.shape[0], pn.weight.dtype)  # NIR's Conv needs one
            if mine is None:
                assert value is None, (name, field)
                continue
            if field == "padding" and isinstance(value, (str, bytes)):
                # NIR's 'valid' / 'same' -> polyir's per-side numbers (torch's 'same' split)
                value = value.decode() if isinstance(value, bytes) else value
                dil = np.broadcast_to(np.asarray(pn.dilation), (pn.weight.ndim - 2,))
                totals = [0] * len(dil) if value == "valid" else \
                    [d * (k - 1) for k, d in zip(pn.weight.shape[2:], dil)]
                assert pn.pads == tuple((t // 2, t - t // 2) for t in totals), (name, pn.pads)
                continue
            if isinstance(mine, str) or isinstance(value, str):
                assert mine == value, (name, field)
                continue
            got = np.asarray(value)
            want = np.asarray(mine)
            assert np.array_equal(got, want), (name, field, got, want)
            if want.dtype.kind == "f":
                assert got.dtype == want.dtype, (name, field, got.dtype, want.dtype)
        for k, v in pn.metadata.items():
            assert np.array_equal(np.asarray(nn.metadata[k]), np.asarray(v)) or \
                nn.metadata[k] == v, (name, k)
