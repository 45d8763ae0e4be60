"""heyoka parameters of a graph: which fields become `par[i]` and how trained values go back.

`to_heyoka(graph, params=True)` and `to_heyoka_ode(graph, params=True)` lay the fields of
PAR_FIELDS out as one par vector (nodes in evaluation order, fields in PAR_FIELDS order, each in C
order) and return beside it a map `par index -> (node, field, flat index)`; `write_params` uses
that map to put a trained vector back into a Graph or into a module from `polyir.to_torch`.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .. import ir

#: the fields that become heyoka par[] with params=True, per kind, in this order within a node.
PAR_FIELDS = {ir.Affine: ("weight", "bias"), ir.Linear: ("weight",), ir.Scale: ("scale",),
              ir.ChannelAffine: ("weight", "bias"), ir.LayerNorm: ("weight", "bias")}


def write_params(target, values, par_map: dict):
    """Put a par vector (trained values of `to_heyoka(..., params=True)` or
    `to_heyoka_ode(..., params=True)`) back where `par_map` says each came from.

    `target` is a Graph (a new Graph is returned, the given one is left as it was; nested
    graphs are followed through their 'outer.inner' names) or a module from `polyir.to_torch`
    (its parameters are overwritten in place under no_grad; returned). Values keep the target's
    dtype."""
    values = np.asarray(values, np.float64).ravel()
    if len(values) < max(par_map, default=-1) + 1:
        raise ir.GraphError(f"{len(values)} values, but par_map reaches par[{max(par_map)}]",
                            field="values", fix="pass the whole par vector the map was made for")
    fields: dict[tuple[str, str], list] = {}
    for i, (node, field, j) in par_map.items():
        fields.setdefault((node, field), []).append((j, values[i]))
    if isinstance(target, ir.Graph):
        return _graph_with(target, fields)
    if hasattr(target, "layer"):  # a polyir.to_torch module
        import torch
        with torch.no_grad():
            for (node, field), items in fields.items():
                p = getattr(target.layer(node), field)
                flat = p.view(-1)
                idx, vals = zip(*items)
                flat[list(idx)] = torch.tensor(vals, dtype=p.dtype, device=p.device)
        return target
    raise ir.GraphError(f"cannot write parameters into a {type(target).__name__}",
                        field="target", fix="pass a polyir Graph or a module from polyir.to_torch")


def _graph_with(graph: ir.Graph, fields: dict) -> ir.Graph:
    nodes = dict(graph.nodes)
    inner: dict[str, dict] = {}
    for (node, field), items in fields.items():
        if node not in nodes:
            outer, _, rest = node.partition(".")
            if not isinstance(nodes.get(outer), ir.Graph):
                raise ir.GraphError("par_map names a node this graph does not have", node=node,
                                    fix="write into the graph the map was made from")
            inner.setdefault(outer, {})[rest, field] = items
            continue
        kind = nodes[node]
        old = np.asarray(getattr(kind, field))
        new = old.astype(old.dtype, copy=True).reshape(-1)
        idx, vals = zip(*items)
        new[list(idx)] = vals
        nodes[node] = dataclasses.replace(kind, **{field: new.reshape(old.shape)})
    for outer, sub in inner.items():
        nodes[outer] = _graph_with(nodes[outer], sub)
    return ir.Graph(nodes, graph.edges, graph.metadata)


__all__ = ["PAR_FIELDS", "write_params"]
