"""Graph: named nodes, directed edges, metadata; shape inference and the one validator.

Several edges into one node's port are summed (NIR's rule). Cycles are allowed only through
stateful nodes: an edge that closes a cycle into a stateful node is recurrent and read with a
one-step delay. A Graph is itself a node kind (nested graphs), stored as NIR's `NIRGraph`.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .errors import GraphError
from .fields import _coerce_metadata, metadata_equal
from .kinds.base import KINDS, Kind, kind
from .kinds.nir import Input, Output
from .types import Port, port

Edge = tuple  # (src, dst) or (src, dst, port)


def edge_port(edge: Edge) -> str:
    return edge[2] if len(edge) > 2 else "input"


@kind(file_type="NIRGraph")
class Graph:
    """A typed dataflow graph of node kinds.

    >>> g = Graph()
    >>> g.add("x", Input((4,))); g.add("fc", Affine(w, b)); g.add("y", Output((2,)))
    >>> g.connect("x", "fc"); g.connect("fc", "y"); g.check()

    Edges are (src, dst) tuples, or (src, dst, port) when dst has several named input ports
    (RuleSet's input predicates, a nested graph's Input nodes). Input and Output nodes keep their
    insertion order: a compiled or imported graph takes and returns them in that order.
    """

    stateful_kind = False

    def __init__(self, nodes: dict | None = None, edges: Iterable | None = None,
                 metadata: dict | None = None):
        self.nodes: dict[str, Kind | Graph] = {}
        self.edges: list[Edge] = []
        self.metadata = _coerce_metadata(metadata or {}, None)
        for name, node in (nodes or {}).items():
            self.add(name, node)
        for e in edges or ():
            self.connect(*e)

    # --- construction --------------------------------------------------------------------------
    def add(self, name: str, node) -> str:
        if not isinstance(name, str) or not name:
            raise GraphError(f"node names must be non-empty strings, got {name!r}", node=str(name),
                             fix="name every node")
        if name in self.nodes:
            raise GraphError("a node of this name exists already", node=name,
                             fix="choose a unique name")
        if not isinstance(node, (Kind, Graph)) or type(node).file_type not in KINDS:
            raise GraphError(f"{type(node).__name__} is not a polyir node kind", node=name,
                             fix=f"use one of {sorted(KINDS)}")
        self.nodes[name] = node
        return name

    def connect(self, src: str, dst: str, port: str | None = None) -> None:
        edge = (str(src), str(dst)) if port in (None, "input") else (str(src), str(dst), str(port))
        self.edges.append(edge)

    @classmethod
    def sequential(cls, *nodes, input_shape=None, input_elem: str = "real",
                   metadata: dict | None = None) -> "Graph":
        """A chain input -> nodes... -> output, named by kind (`affine`, `affine_1`, ...).
        `input_shape` is needed when the first node does not fix its input shape."""
        if len(nodes) == 1 and isinstance(nodes[0], (list, tuple)):
            nodes = tuple(nodes[0])
        g = cls(metadata=metadata)
        counts: dict[str, int] = {}

        def name_for(node):
            base = type(node).__name__.lower()
            n = counts.get(base, 0)
            counts[base] = n + 1
            return base if n == 0 else f"{base}_{n}"

        prev = None
        if not nodes or not isinstance(nodes[0], Input):
            if input_shape is None:
                first = nodes[0].in_ports().get("input") if nodes else None
                if first is None or first.shape is None:
                    raise GraphError("the first node does not fix its input shape", node="input",
                                     field="shape", fix="pass input_shape=...")
                input_shape = first.shape
            prev = g.add("input", Input(tuple(np.atleast_1d(input_shape)), elem=input_elem))
        for node in nodes:
            name = g.add(name_for(node), node)
            if prev is not None:
                g.connect(prev, name)
            prev = name
        if not isinstance(nodes[-1] if nodes else None, Output):
            shape = g.infer_types()[prev].shape
            g.connect(prev, g.add("output", Output(shape)))
        g.check()
        return g

    # --- views ---------------------------------------------------------------------------------
    @property
    def inputs(self) -> list[str]:
        return [n for n, k in self.nodes.items() if isinstance(k, Input)]

    @property
    def outputs(self) -> list[str]:
        return [n for n, k in self.nodes.items() if isinstance(k, Output)]

    @property
    def stateful(self) -> bool:
        return any(k.stateful for k in self.nodes.values())

    @property
    def kind_name(self) -> str:
        return "Graph"

    def predecessors(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e[1] == name]

    def successors(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e[0] == name]

    def parameter_count(self) -> int:
        return sum(k.parameter_count() for k in self.nodes.values())

    def __eq__(self, other):
        if not isinstance(other, Graph):
            return NotImplemented
        return (list(self.nodes) == list(other.nodes)
                and all(self.nodes[k] == other.nodes[k] for k in self.nodes)
                and [tuple(e) for e in self.edges] == [tuple(e) for e in other.edges]
                and metadata_equal(self.metadata, other.metadata))

    __hash__ = object.__hash__

    def __repr__(self):
        return f"Graph({len(self.nodes)} nodes, {len(self.edges)} edges)"

    def __str__(self):
        types = self.infer_types(strict=False)
        rows = [f"{'node':<20} {'kind':<12} {'output':<20} inputs"]
        for name, node in self.nodes.items():
            srcs = ", ".join(e[0] + (f"->{e[2]}" if len(e) > 2 else "") for e in self.predecessors(name))
            rows.append(f"{name:<20} {node.kind_name:<12} {str(types.get(name, '?')):<20} {srcs}")
        return "\n".join(rows)

    # --- nested graphs as nodes ----------------------------------------------------------------
    def validate(self, name):
        pass

    def in_ports(self) -> dict[str, Port]:
        ports = {n: self.nodes[n].out_port({}) for n in self.inputs}
        if len(ports) == 1:
            ports = {"input": next(iter(ports.values()))}
        return ports

    def out_port(self, inputs) -> Port | None:
        outs = self.outputs
        if len(outs) != 1:
            return None
        return self.infer_types(strict=False).get(outs[0])

    def check(self, name: str | None = None, inputs: dict | None = None) -> None:
        """Validate the whole graph; raises GraphError naming node, field and fix."""
        prefix = "" if name is None else name + "."
        if name is not None and len(self.outputs) != 1:
            raise GraphError(f"a nested graph needs exactly one Output node, has {len(self.outputs)}",
                             node=name, field="nodes", fix="give the subgraph one Output")
        if not self.inputs:
            raise GraphError("the graph has no Input node", node=name, field="nodes",
                             fix="add an Input node")
        if not self.outputs:
            raise GraphError("the graph has no Output node", node=name, field="nodes",
                             fix="add an Output node")
        for n, node in self.nodes.items():
            if isinstance(node, Graph):
                node.check(prefix + n)
            else:
                node.validate(prefix + n)
        self.infer_types(strict=True, prefix=prefix)
        self.order(prefix=prefix)

    # --- typing --------------------------------------------------------------------------------
    def _check_edges(self, prefix=""):
        for e in self.edges:
            if len(e) not in (2, 3) or not all(isinstance(x, str) for x in e):
                raise GraphError(f"edge {e!r} must be (src, dst) or (src, dst, port) of strings",
                                 node=prefix + str(e[1] if len(e) > 1 else e), field="edges",
                                 fix="name nodes by string")
            src, dst = e[0], e[1]
            for end, what in ((src, "source"), (dst, "destination")):
                if end not in self.nodes:
                    raise GraphError(f"edge {src!r} -> {dst!r} names a {what} node {end!r} that "
                                     "does not exist", node=prefix + end, field="edges",
                                     fix=f"add node {end!r} or remove the edge; nodes are "
                                         f"{sorted(self.nodes)}")
            if isinstance(self.nodes[dst], Input):
                raise GraphError(f"edge {src!r} -> {dst!r} feeds an Input node",
                                 node=prefix + dst, field="edges", fix="Inputs take no edges")
            if isinstance(self.nodes[src], Output):
                raise GraphError(f"edge {src!r} -> {dst!r} leaves an Output node",
                                 node=prefix + src, field="edges", fix="Outputs feed nothing")
            ports = self.nodes[dst].in_ports()
            if edge_port(e) not in ports:
                raise GraphError(f"edge {src!r} -> {dst!r} feeds port {edge_port(e)!r}, which "
                                 f"{type(self.nodes[dst]).__name__} does not have",
                                 node=prefix + dst, field="edges",
                                 fix=f"use one of its ports {sorted(ports)}")

    def infer_types(self, strict: bool = True, prefix: str = "") -> dict[str, Port]:
        """Output port type of every node, inferred along edges. With strict, every edge must
        join equal types and every node must be fed; otherwise best effort (for display)."""
        if strict:
            self._check_edges(prefix)
        out: dict[str, Port] = {}
        incoming: dict[str, dict[str, list[str]]] = {n: {} for n in self.nodes}
        for e in self.edges:
            if e[1] in incoming and e[0] in self.nodes:
                incoming[e[1]].setdefault(edge_port(e), []).append(e[0])
        pending = list(self.nodes)
        while pending:
            progress = False
            for n in list(pending):
                node = self.nodes[n]
                ins = {}
                for p, srcs in incoming[n].items():
                    known = [out[s] for s in srcs if s in out]
                    ins[p] = known[0] if known else None
                try:
                    res = node.out_port(ins)
                except GraphError as exc:
                    if not strict:
                        pending.remove(n)
                        continue
                    raise GraphError(exc.reason, node=prefix + n, field=exc.field,
                                     fix=exc.fix) from None
                if res is not None and res.shape is not None:
                    out[n] = res
                    pending.remove(n)
                    progress = True
            if not progress:
                break
        if not strict:
            return out
        if pending:
            n = pending[0]
            raise GraphError("its type cannot be inferred: nothing of known shape feeds it",
                             node=prefix + n, field="edges",
                             fix="connect it to an Input, or give the kind its input shape")
        for n, node in self.nodes.items():
            declared = node.in_ports()
            resolved = {}
            for p, want in declared.items():
                srcs = incoming[n].get(p, [])
                if not srcs:
                    if isinstance(node, Output) or len(declared) == 1:
                        raise GraphError(f"input port {p!r} is not connected", node=prefix + n,
                                         field="edges", fix="connect something to it")
                    raise GraphError(f"input port {p!r} is not connected", node=prefix + n,
                                     field="edges", fix=f"add an edge (src, {n!r}, {p!r})")
                for s in srcs:
                    got = out[s]
                    if want.shape is not None and got.shape != want.shape:
                        raise GraphError(f"edge {s!r} -> {n!r} carries shape {got.shape} but "
                                         f"port {p!r} expects {want.shape}", node=prefix + n,
                                         field="input", fix="insert a Flatten or fix the layer sizes")
                    if want.elem is not None and got.elem != want.elem:
                        fix = ("insert a Binarize (or declare the Input elem='bit')"
                               if want.elem == "bit" else "feed values of the expected kind")
                        raise GraphError(f"edge {s!r} -> {n!r} carries {got.elem} values but "
                                         f"{node.kind_name} expects {want.elem}", node=prefix + n,
                                         field="input", fix=fix)
                    if want.elem == "relation" and got.arity != want.arity:
                        raise GraphError(f"edge {s!r} -> {n!r} carries facts of arity {got.arity},"
                                         f" port {p!r} expects {want.arity}", node=prefix + n,
                                         field="input", fix="fix the input predicate's arity")
                    first = out[srcs[0]]
                    if got.shape != first.shape or got.elem != first.elem:
                        raise GraphError(f"edges into port {p!r} disagree: {srcs[0]!r} gives "
                                         f"{first}, {s!r} gives {got}", node=prefix + n,
                                         field="input", fix="summed edges must carry one type")
                resolved[p] = out[srcs[0]]
            if not isinstance(node, Graph):
                try:
                    node.check(prefix + n, resolved)
                except GraphError as exc:
                    if exc.node is None:
                        raise GraphError(exc.reason, node=prefix + n, field=exc.field,
                                         fix=exc.fix) from None
                    raise
        return out

    # --- order ---------------------------------------------------------------------------------
    def order(self, prefix: str = "") -> tuple[list[str], set[Edge]]:
        """Topological order and the recurrent edges (read with a one-step delay).

        When every remaining node waits on another, the first remaining stateful node has its
        unresolved incoming edges declared recurrent; if none is stateful the cycle is an error.
        """
        waiting = {n: [e for e in self.edges if e[1] == n] for n in self.nodes}
        done: list[str] = []
        seen: set[str] = set()
        recurrent: set[Edge] = set()
        remaining = list(self.nodes)
        while remaining:
            ready = [n for n in remaining if all(e[0] in seen for e in waiting[n])]
            if not ready:
                breaker = next((n for n in remaining if _is_stateful(self.nodes[n])), None)
                if breaker is None:
                    raise GraphError("is part of a cycle with no stateful node to delay it",
                                     node=prefix + remaining[0], field="edges",
                                     fix="break the cycle or route it through a neuron/Delay")
                recurrent |= {tuple(e) for e in waiting[breaker] if e[0] not in seen}
                ready = [breaker]
            for n in ready[:1]:
                done.append(n)
                seen.add(n)
                remaining.remove(n)
        return done, recurrent

    # --- transforms ----------------------------------------------------------------------------
    def flattened(self) -> "Graph":
        """The same graph with every nested graph inlined (inner names become 'outer.inner')."""
        if not any(isinstance(k, Graph) for k in self.nodes.values()):
            return self
        g = Graph(metadata=self.metadata)
        entries: dict[str, dict[str, list[Edge]]] = {}
        exits: dict[str, list[str]] = {}
        for name, node in self.nodes.items():
            if not isinstance(node, Graph):
                g.add(name, node)
                continue
            inner = node.flattened()
            ins, outs = inner.inputs, inner.outputs
            for n, k in inner.nodes.items():
                if n not in ins and n not in outs:
                    g.add(f"{name}.{n}", k)
            for e in inner.edges:
                if e[0] not in ins and e[1] not in outs:
                    g.connect(f"{name}.{e[0]}", f"{name}.{e[1]}", *e[2:])
            entries[name] = {("input" if len(ins) == 1 else i): [
                (f"{name}.{e[1]}",) + tuple(e[2:]) for e in inner.edges if e[0] == i]
                for i in ins}
            exits[name] = [f"{name}.{e[0]}" for e in inner.edges if e[1] in outs]
        for e in self.edges:
            srcs = exits.get(e[0], [e[0]])
            dsts = entries[e[1]][edge_port(e)] if e[1] in entries else [(e[1],) + tuple(e[2:])]
            for s in srcs:
                for d in dsts:
                    g.connect(s, *d)
        return g


def _is_stateful(node) -> bool:
    return node.stateful if isinstance(node, Graph) else type(node).stateful
