"""Graph: named nodes, directed edges, metadata; shape inference and the one validator.

Several edges into one node's port are summed (NIR's rule). Cycles are allowed only through
stateful nodes: the edges that close a cycle back into its entry node are recurrent and read with
a one-step delay (see Graph.order). A Graph is itself a node kind (nested graphs), stored as
NIR's `NIRGraph`.
"""
from __future__ import annotations

import heapq
from collections import deque
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
        _check_name(name)
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
        self.metadata = _coerce_metadata(self.metadata, name)
        for n, node in self.nodes.items():
            _check_name(n, prefix)
            if isinstance(node, Graph):
                node.check(prefix + n)
            # a Kind validated its own fields when it was built (it is frozen since)
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
        succs: dict[str, list[str]] = {n: [] for n in self.nodes}
        for e in self.edges:
            if e[1] in incoming and e[0] in self.nodes:
                incoming[e[1]].setdefault(edge_port(e), []).append(e[0])
                succs[e[0]].append(e[1])
        # Visit in topological order, so that every node sees the types of everything that
        # feeds it (a node that guessed from a partial view could take a wrong element kind);
        # a node whose type waits on a recurrent source is retried when that source resolves.
        # Each node is tried once plus once per resolved predecessor: linear in the graph.
        try:
            queue = deque(self.order(prefix)[0])
        except GraphError:  # a cycle without a stateful node: check() reports it after typing
            queue = deque(self.nodes)
        pending = set(self.nodes)
        while queue:
            n = queue.popleft()
            if n not in pending:
                continue
            node = self.nodes[n]
            ins = {}
            for p, srcs in incoming[n].items():
                ins[p] = next((out[s] for s in srcs if s in out), None)
            try:
                res = node.out_port(ins)
            except GraphError as exc:
                if not strict:
                    pending.discard(n)
                    continue
                raise GraphError(exc.reason, node=prefix + n, field=exc.field,
                                 fix=exc.fix) from None
            if res is not None and res.shape is not None:
                out[n] = res
                pending.discard(n)
                queue.extend(s for s in succs[n] if s in pending)
        if not strict:
            return out
        if pending:
            n = next(m for m in self.nodes if m in pending)
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

        Every cycle must pass through a stateful node (a neuron or Delay); otherwise GraphError.
        Nodes run in insertion order wherever the edges allow it. When every remaining node waits
        on another, a cycle blocks: in the first strongly connected component that waits on
        nothing outside itself, the entry node (the first, in insertion order, that something
        already computed feeds) is where the cycle starts: walking back from it through the
        component's stateless nodes, each edge leaving a stateful node is read with a one-step
        delay. The delay thus sits on a neuron's (or Delay's) output, never on a stateless node's:
        a recurrent Affine computes W z(t-1) + b, its bias acting from the first step (NIR's ODE
        reading, and snnTorch's RLeaky). Nodes merely downstream of a cycle get no recurrent
        edges.
        """
        names = list(self.nodes)
        index = {n: i for i, n in enumerate(names)}
        preds: dict[str, list[Edge]] = {n: [] for n in names}
        succs: dict[str, list[str]] = {n: [] for n in names}
        for e in self.edges:
            if e[0] in index and e[1] in index:
                preds[e[1]].append(tuple(e))
                succs[e[0]].append(e[1])
        plain = [n for n in names if not _is_stateful(self.nodes[n])]
        comp = _components(plain, preds)
        sizes: dict[int, list[str]] = {}
        for n in plain:
            sizes.setdefault(comp[n], []).append(n)
        for members in sizes.values():
            if len(members) > 1 or any(e[0] == members[0] for e in preds[members[0]]):
                raise GraphError(f"is part of a cycle ({' -> '.join(members)}) with no stateful "
                                 "node to delay it", node=prefix + members[0], field="edges",
                                 fix="break the cycle or route it through a neuron/Delay")
        waiting = {n: len(preds[n]) for n in names}
        done: list[str] = []
        seen: set[str] = set()
        recurrent: set[Edge] = set()
        walked: set[str] = set()
        heap = [index[n] for n in names if waiting[n] == 0]
        heapq.heapify(heap)
        while len(done) < len(names):
            if heap:
                n = names[heapq.heappop(heap)]
                done.append(n)
                seen.add(n)
                for s in succs[n]:
                    waiting[s] -= 1
                    if waiting[s] == 0 and s not in seen:
                        heapq.heappush(heap, index[s])
                continue
            remaining = [n for n in names if n not in seen]
            comp = _components(remaining, preds)
            members: dict[int, list[str]] = {}
            for n in remaining:
                members.setdefault(comp[n], []).append(n)
            source = next(ms for ms in members.values()
                          if all(comp[e[0]] == comp[ms[0]] for m in ms for e in preds[m]
                                 if e[0] not in seen))
            entry = next((m for m in source if any(e[0] in seen for e in preds[m])),
                         next(m for m in source if _is_stateful(self.nodes[m])))
            # Walk back from the entry through stateless members: the first stateful node on
            # each path back delays its output (NIR's ODE reading: stateless nodes are
            # instantaneous, so what a recurrent Affine computes, bias included, acts at once).
            inside = set(source)
            stack = [entry] if entry not in walked else []
            walked.add(entry)
            while stack:
                m = stack.pop()
                for e in preds[m]:  # each edge once (a node is walked once), repeats counted
                    if e[0] not in inside:
                        continue
                    if _is_stateful(self.nodes[e[0]]):
                        recurrent.add(e)
                        waiting[m] -= 1
                        if waiting[m] == 0:
                            heapq.heappush(heap, index[m])
                    elif e[0] not in walked:
                        walked.add(e[0])
                        stack.append(e[0])
            if not heap:  # pragma: no cover - every cycle passes a stateful node (checked above)
                raise GraphError("cannot order the cycle through it", node=prefix + entry,
                                 field="edges", fix="route the cycle through a neuron or Delay")
        return done, recurrent

    # --- transforms ----------------------------------------------------------------------------
    def flattened(self) -> "Graph":
        """The same graph with every nested graph inlined (inner names become 'outer.inner').

        A nested graph's Input and Output nodes disappear: what fed the nested graph's port feeds
        the inner nodes its Input fed, and what the inner Output received is what the nested
        graph's successors receive (also when an inner Input feeds the Output directly)."""
        if not any(isinstance(k, Graph) for k in self.nodes.values()):
            return self
        g = Graph(metadata=self.metadata)
        inner_of: dict[str, Graph] = {}
        for name, node in self.nodes.items():
            if not isinstance(node, Graph):
                g.add(name, node)
                continue
            inner = inner_of[name] = node.flattened()
            boundary = set(inner.inputs) | set(inner.outputs)
            for n, k in inner.nodes.items():
                if n not in boundary:
                    g.add(f"{name}.{n}", k)
            for e in inner.edges:
                if e[0] not in boundary and e[1] not in boundary:
                    g.connect(f"{name}.{e[0]}", f"{name}.{e[1]}", *e[2:])

        def port_of(inner: Graph, input_name: str) -> str:
            return "input" if len(inner.inputs) == 1 else input_name

        def sources(name: str, active: frozenset) -> list[str]:
            """Flattened nodes whose value leaves outer node `name`."""
            if name not in inner_of:
                return [name]
            if name in active:
                raise GraphError("nested graphs pass a value straight through in a cycle",
                                 node=name, field="edges", fix="put a node inside the cycle")
            inner = inner_of[name]
            out = []
            for e in inner.edges:
                if e[1] not in inner.outputs:
                    continue
                if e[0] in inner.inputs:  # passthrough: whatever feeds that port
                    p = port_of(inner, e[0])
                    for f in self.edges:
                        if f[1] == name and edge_port(f) == p:
                            out += sources(f[0], active | {name})
                else:
                    out.append(f"{name}.{e[0]}")
            return out

        def targets(name: str, port: str) -> list[tuple]:
            """Flattened (node, port) pairs that outer port (`name`, `port`) feeds."""
            if name not in inner_of:
                return [(name,) if port == "input" else (name, port)]
            inner = inner_of[name]
            out = []
            for i in inner.inputs:
                if port_of(inner, i) != port:
                    continue
                for e in inner.edges:
                    if e[0] == i and e[1] not in inner.outputs:
                        out.append((f"{name}.{e[1]}",) + tuple(e[2:]))
            return out

        for e in self.edges:
            for s in sources(e[0], frozenset()):
                for d in targets(e[1], edge_port(e)):
                    g.connect(s, *d)
        return g


def _check_name(name, prefix: str = "") -> None:
    """Node names are non-empty strings that can name an HDF5 group ('/' would nest groups)."""
    if not isinstance(name, str) or not name:
        raise GraphError(f"node names must be non-empty strings, got {name!r}",
                         node=prefix + str(name), fix="name every node")
    if "/" in name or name in (".", "..") or "\0" in name:
        raise GraphError(f"node name {name!r} contains '/' or is '.'/'..'", node=prefix + name,
                         fix="use names without '/' (nested graphs give 'outer.inner' names)")


def _is_stateful(node) -> bool:
    return node.stateful if isinstance(node, Graph) else type(node).stateful


def _components(nodes: list[str], preds: dict[str, list]) -> dict[str, int]:
    """Strongly connected components (iterative Tarjan) of the subgraph on `nodes`: node -> id."""
    inside = set(nodes)
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for n in nodes:
        for e in preds[n]:
            if e[0] in inside:
                succ[e[0]].append(n)
    idx: dict[str, int] = {}
    low: dict[str, int] = {}
    comp: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = 0
    for root in nodes:
        if root in idx:
            continue
        work = [(root, 0)]
        while work:
            n, i = work.pop()
            if i == 0:
                idx[n] = low[n] = counter
                counter += 1
                stack.append(n)
                on_stack.add(n)
            recurse = False
            for j in range(i, len(succ[n])):
                m = succ[n][j]
                if m not in idx:
                    work.append((n, j + 1))
                    work.append((m, 0))
                    recurse = True
                    break
                if m in on_stack:
                    low[n] = min(low[n], idx[m])
            if recurse:
                continue
            if low[n] == idx[n]:
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp[m] = idx[n]
                    if m == n:
                        break
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[n])
    return comp
