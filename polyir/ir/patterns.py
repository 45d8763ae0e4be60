"""Pattern passes over a Graph. `find_ffnn_chains` finds feed-forward chains
Affine/Linear -> Activation... -> Affine/Linear -> ... that a backend may map to one dense-network
primitive (the heyoka importer maps each to `heyoka.model.ffnn`).
"""
from __future__ import annotations

import dataclasses

from .graph import Graph, edge_port
from .kinds.ffnn import Activation
from .kinds.nir import Affine, Linear

_LAYER = (Affine, Linear)


@dataclasses.dataclass(frozen=True)
class FfnnLayer:
    """One dense layer of a chain: the Affine/Linear node and the activations applied after it,
    in order (empty: identity)."""

    dense: str
    activations: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class FfnnChain:
    """A maximal chain of dense layers. `nodes` lists every member in order; only `nodes[0]`
    reads from outside the chain and only `nodes[-1]` is read from outside it."""

    layers: tuple[FfnnLayer, ...]

    @property
    def nodes(self) -> tuple[str, ...]:
        out: list[str] = []
        for layer in self.layers:
            out.append(layer.dense)
            out.extend(layer.activations)
        return tuple(out)

    @property
    def head(self) -> str:
        return self.layers[0].dense

    @property
    def last(self) -> str:
        return self.nodes[-1]


def _next_in_chain(graph: Graph, name: str, succ: dict, pred: dict) -> str | None:
    """The single successor of `name` when it may continue a chain, else None."""
    outs = succ.get(name, [])
    if len(outs) != 1 or edge_port(outs[0]) != "input":
        return None
    nxt = outs[0][1]
    if not isinstance(graph.nodes[nxt], (*_LAYER, Activation)) or len(pred.get(nxt, [])) != 1:
        return None
    return nxt


def find_ffnn_chains(graph: Graph, min_nodes: int = 2) -> list[FfnnChain]:
    """Maximal chains that start at an Affine/Linear node, continue through Affine/Linear/
    Activation nodes each fed by exactly the previous member (one edge, no other source), whose
    inner members feed nothing else, and that have at least `min_nodes` members. Activations
    before the first dense layer are not part of a chain. Works on a flat graph (nested graphs
    are opaque nodes: call it on `graph.flattened()`)."""
    succ: dict[str, list] = {}
    pred: dict[str, list] = {}
    for e in graph.edges:
        succ.setdefault(e[0], []).append(e)
        pred.setdefault(e[1], []).append(e)
    taken: set[str] = set()
    chains: list[FfnnChain] = []
    for name, node in graph.nodes.items():
        if name in taken or not isinstance(node, _LAYER):
            continue
        # A dense node continuing some chain is not a head: skip it, its head will collect it.
        ps = pred.get(name, [])
        if len(ps) == 1 and isinstance(graph.nodes[ps[0][0]], (*_LAYER, Activation)):
            start = ps[0][0]
            if _next_in_chain(graph, start, succ, pred) == name and _reaches_dense_head(
                    graph, start, succ, pred):
                continue
        members = [name]
        cur = name
        while (nxt := _next_in_chain(graph, cur, succ, pred)) is not None and nxt not in members:
            members.append(nxt)
            cur = nxt
        if len(members) < min_nodes:
            continue
        layers: list[FfnnLayer] = []
        for m in members:
            if isinstance(graph.nodes[m], _LAYER):
                layers.append(FfnnLayer(m, ()))
            else:
                layers[-1] = FfnnLayer(layers[-1].dense, layers[-1].activations + (m,))
        taken.update(members)
        chains.append(FfnnChain(tuple(layers)))
    return chains


def _reaches_dense_head(graph: Graph, name: str, succ: dict, pred: dict) -> bool:
    """Whether walking back from `name` along single-edge links (the way a chain continues)
    reaches an Affine/Linear node, i.e. `name` is inside some chain."""
    seen = set()
    cur = name
    while cur not in seen:
        seen.add(cur)
        if isinstance(graph.nodes[cur], _LAYER):
            return True
        if not isinstance(graph.nodes[cur], Activation):
            return False
        ps = pred.get(cur, [])
        if len(ps) != 1:
            return False
        prev = ps[0][0]
        if _next_in_chain(graph, prev, succ, pred) != cur:
            return False
        cur = prev
    return False


__all__ = ["FfnnChain", "FfnnLayer", "find_ffnn_chains"]
