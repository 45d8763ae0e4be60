"""Graph -> Program: the lowering walker and the pipeline every renderer starts from.

`lower(graph)` walks the graph (ir.walk.GraphWalker: flattened, topological, recurrent edges read
with a one-step delay) and calls one `@lower_rule(Kind)` per node (program.lower_rule; the rules:
lower_dense.py for the real-valued feed-forward and CNN kinds, lower_logic.py for the bit kinds,
lower_neuron.py for neurons). Rules append `Op`s from the closed set of program.py; each op
carries its IR node's name, so generated code comments say where it came from. `prepare` runs
the whole pipeline: optimise, lower, the program passes of passes.py, and returns a planned,
immutable Program that renderers only read. Everything a renderer needs that is *semantics*
lives in the program once, so the C and CUDA outputs are bit-identical by construction on logic
graphs.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .. import ir
from ..ir.errors import GraphError
from ..ir.optimize import optimize as optimize_graph
from ..ir.walk import GraphWalker
from . import lower_dense, lower_logic, lower_neuron  # noqa: F401  (they fill lower_rule)
from .passes import bypass_copies, plan_memory, relayout_logic
from .program import MAX_BUFFER_FEATURES, Buffer, IOSpec, Op, Program, RealSpelling, lower_rule


class Lowering(GraphWalker):
    """Walks a graph and collects the program; rules call `buffer`, `emit`."""

    def __init__(self, graph: ir.Graph, backend: str = "c", dt: float | None = None,
                 supported: set | None = None, discretization: str = "euler"):
        self.backend = backend
        super().__init__(graph)
        self.buffers: list[Buffer] = []
        self.ops: list[Op] = []
        self.dt = dt
        self.discretization = discretization
        self.stateful = any(type(n).stateful for n in self.graph.nodes.values())
        self.scalar = RealSpelling(graph_dtype(self.graph))  # how rules spell C statements
        for name in self.order:
            node = self.graph.nodes[name]
            if type(node) not in lower_rule or (supported is not None
                                                 and type(node) not in supported):
                rules = supported if supported is not None else set(lower_rule.rules)
                raise GraphError(f"{type(node).__name__} is not supported by the {backend} backend",
                                 node=name, field="type",
                                 fix=f"the {backend} backend supports "
                                     f"{sorted(k.__name__ for k in rules)}; run this graph with "
                                     "polyir.to_torch, or replace the node")
        # persistent buffers for sources of recurrent edges: the reader sees last step's value
        self.recurrent_buffers: dict[str, int] = {}
        for e in self.recurrent_edges:
            src = e[0]
            if src not in self.recurrent_buffers:
                p = self.types[src]
                self.recurrent_buffers[src] = self.buffer(p.elem, p.size, src, persistent=True)

    # --- helpers for rules --------------------------------------------------------------------
    def buffer(self, elem: str, size: int, node: str, persistent: bool = False) -> int:
        if size > MAX_BUFFER_FEATURES:  # its tile would not fit in memory: refuse, never crash
            raise GraphError(f"its value has {size:,} features per sample, more than the "
                             f"{MAX_BUFFER_FEATURES:,} a {self.backend} program lays out",
                             node=node, field="shape", fix="make the layer (or the Input) smaller")
        b = Buffer(len(self.buffers), elem, int(size), node, persistent)
        self.buffers.append(b)
        return b.id

    def result(self, name: str, elem: str, size: int) -> int:
        """The buffer a node writes its value into (persistent when a recurrent edge reads it)."""
        if name in self.recurrent_buffers:
            return self.recurrent_buffers[name]
        return self.buffer(elem, size, name)

    def emit(self, op: str, name: str, out, ins=(), **attrs) -> Any:
        consts = attrs.pop("consts", {})
        node = self.graph.nodes.get(name)
        self.ops.append(Op(op, name, type(node).__name__ if node is not None else "?", out,
                           tuple(ins), attrs, consts))
        return out

    def elem(self, b: int) -> str:
        return self.buffers[b].elem

    def size(self, b: int) -> int:
        return self.buffers[b].size

    def need_dt(self, name: str) -> float:
        if self.dt is None:
            raise GraphError(f"{type(self.graph.nodes[name]).__name__} needs a time step dt; "
                             "the graph has no 'dt' metadata", node=name, field="dt",
                             fix=f"pass dt=... to polyir.compile(graph, {self.backend!r}, dt=...) "
                                 "or set graph.metadata['dt']")
        return self.dt

    # --- walker hooks ---------------------------------------------------------------------------
    def add(self, a: int, b: int) -> int:
        if self.elem(a) != "real" or self.elem(b) != "real":
            raise GraphError("several bit edges into one port would be summed; the "
                             f"{self.backend} backend sums real values only",
                             field="edges", fix="combine bits with a LogicLayer instead")
        out = self.buffer("real", self.size(a), self._current)
        return self.emit("add", self._current, out, (a, b))

    def visit(self, name, node, values):
        self._current = name
        out = lower_rule.apply(self, name, node, values)
        if name in self.recurrent_buffers and out != self.recurrent_buffers[name]:
            out = self.emit("copy", name, self.recurrent_buffers[name], (out,))
        return out

    def gather(self, env, name, previous=None):
        self._current = name
        return super().gather(env, name, previous)

    def lower(self) -> Program:
        feeds, inputs = {}, []
        for k, name in enumerate(self.input_names):
            node = self.graph.nodes[name]
            if node.elem not in ("real", "bit"):
                raise GraphError(f"an Input of {node.elem} values is not supported by the "
                                 f"{self.backend} backend", node=name, field="elem",
                                 fix="run relational graphs with polyir.to_torch")
            p = self.types[name]
            b = self.result(name, p.elem, p.size)
            self.ops.append(Op("load", name, "Input", b, (), {"index": k}))
            feeds[name] = b
            inputs.append(IOSpec(name, b, tuple(p.shape), p.elem))
        env = self.run(feeds, previous=self.recurrent_buffers)
        outputs = []
        for k, name in enumerate(self.output_names):
            p = self.types[name]
            outputs.append(IOSpec(name, env[name], tuple(p.shape), p.elem))
            self.ops.append(Op("store", name, "Output", None, (env[name],), {"index": k}))
        nodes = [(n, type(self.graph.nodes[n]).__name__) for n in self.order]
        return Program(self.buffers, self.ops, inputs, outputs, self.stateful, self.dt, nodes,
                       self.scalar.dtype, discretization=self.discretization)


def lower(graph: ir.Graph, backend: str = "c", dt: float | None = None,
          supported: set | None = None, discretization: str | None = None) -> Program:
    """Graph -> Program. `dt` and `discretization` default to the graph's metadata (as
    polyir.to_torch; discretization then to "euler"); `supported` restricts the kinds (a backend
    that has no spelling for some op)."""
    if dt is None and "dt" in graph.metadata:
        dt = graph.metadata["dt"]
    if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float, np.number))
                           or not (float(dt) > 0 and math.isfinite(float(dt)))):
        raise GraphError(f"dt must be a positive number, got {dt!r}", field="dt",
                         fix="pass dt=<seconds> > 0")
    if discretization is None:
        discretization = graph.metadata.get("discretization", "euler")
    if discretization not in ir.DISCRETIZATIONS:
        raise GraphError(f"unknown discretization {discretization!r}", field="discretization",
                         fix=f"use one of {ir.DISCRETIZATIONS}")
    return Lowering(graph, backend, None if dt is None else float(dt), supported,
                    discretization).lower()

def prepare(graph: ir.Graph, backend: str, tile: int, dt: float | None = None,
            supported: set | None = None, optimize: bool = True,
            discretization: str | None = None, multi_source: bool = False,
            relayout: str = "runs") -> Program:
    """The lowering pipeline every renderer starts from: polyir.optimize (unless told not to),
    lower, skip copy gates (`bypass_copies`, for a target whose logic ops may read several
    buffers: `multi_source`), order the logic ops' gates (`relayout_logic`, gate order
    `relayout`), plan the workspace for `tile` samples. The Program it returns is complete and
    immutable."""
    if optimize:
        graph = optimize_graph(graph)
    program = lower(graph, backend, dt=dt, supported=supported, discretization=discretization)
    if optimize and multi_source:
        program = bypass_copies(program)
    return plan_memory(relayout_logic(program, relayout, tile), tile)


def graph_dtype(graph: ir.Graph) -> str:
    """'float64' if any float array of the graph is float64, else 'float32' (the torch
    importer's rule, so both compute in the same precision)."""
    for node in graph.flattened().nodes.values():
        for f in dataclasses.fields(node):
            v = getattr(node, f.name)
            arrays = v.values() if isinstance(v, dict) and f.name != "metadata" else [v]
            if any(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in arrays):
                return "float64"
    return "float32"


# lower_rule is re-exported: importing this module is what fills it with every family's rules
__all__ = ["lower", "prepare", "graph_dtype", "Lowering", "lower_rule"]
