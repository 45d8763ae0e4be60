"""Graph -> a small backend-neutral program, shared by the C and CUDA renderers.

The program works on a *tile* of samples (as many as one machine word has bits in C, a block's
share on the GPU). Every value is a buffer in the tile's workspace, laid out feature-major:

- a real buffer of n features holds n x TILE floats, feature i's samples at [i * TILE + s];
- a bit buffer of n features holds n x TILE bits, feature i's word(s) carrying sample s at bit s
  (difflogic's bit-slicing: one word op evaluates a gate for a whole word of samples).

`lower(graph)` walks the graph (ir.walk.GraphWalker: flattened, topological, recurrent edges read
with a one-step delay) and calls one `@lower_rule(Kind)` per node. Rules append `Op`s from a closed
set (`OPS`); each op carries its IR node's name, so generated code comments say where it came
from. Everything a renderer needs that is *semantics* lives here once -- the 16 gates as bitwise
expressions (`GATE_EXPR`), activations (`ACT_EXPR`), neuron updates (`neuron_body`, from the
kinds' own step coefficients) -- so the C
and CUDA outputs are bit-identical by construction on logic graphs.

Op set (out = the op's output buffer, ins = its input buffers):
  load      ins=()      copy graph input `attrs['index']` of this time step into `out`
                        (real: float32 transpose; bit: pack nonzero uint8 bytes into words)
  store     out=None    write `ins[0]` to graph output `attrs['index']` (bit -> 0/1 floats)
  add       out = ins[0] + ins[1] (real only; several edges into one port are summed)
  copy      out = ins[0]
  matvec    out[o] = sum_i W[o, i] x[i] + bias[o]                    consts weight (out,in), bias
                        attrs sparse_input: x is mostly zero (spikes); then consts weight_t
                        (in,out) too, so that active inputs' weight rows are contiguous
  spmv      out[o] = sum_k val[k] x[col[k]] + bias[o], k in ptr[o]..ptr[o+1]   (conv, pools)
  scale     out[i] = scale[i] * x[i]
  threshold out[i] = x[i] > threshold[i] ? 1 : 0
  act       out[i] = ACT_EXPR[fn](x[i], alpha)
  binarize  bit j of out = x[src[j]] > thr[j]                         consts src, thr
  logic     out[j] = GATE_EXPR[gate[j]](x[a[j]], x[b[j]])            consts a, b, gate
  tree      out[r] = a binary tree of gates over x[leaves[r, 0..L)] (-1: the all-zero word of
            ins[1]), level 0 first; gate i of row r is ANF code anf[r // group_rows, i]:
            G(a, b) = c0 ^ c1 a ^ c2 b ^ c3 ab, bit k = ck (conv and pooling windows: each row's
            tree is evaluated in registers)
  groupsum  out[c] = (popcount of bits c*m .. c*m+m-1 + beta) / tau   attrs k, m, tau, beta
  neuron    one time step of a neuron kind: C statements (`neuron_body`) over the state variables
            (`attrs['states']` names, buffers in `attrs['state']`) and per-neuron constants
  spmax     out[o] = max of x[col[k]], k in ptr[o]..ptr[o+1]                   (max pooling)
  place     out[dst[j]] = x[j] for every feature j of ins[0]                 (concatenation)
  binary    out = BINARY_EXPR[fn](ins[0], ins[1]) elementwise
  clamp     out[i] = min(max(x[i], lo), hi)                                  attrs lo, hi
  softmax   over `n` features at stride `stride` in each of `groups` groups   attrs log
  layernorm over each contiguous block of `m` features; consts weight, bias (m,) or absent
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .. import ir
from ..ir.errors import GraphError
from ..ir.kinds.cnn import adaptive_windows, operand_ports
from ..ir.optimize import optimize as optimize_graph
from ..ir.walk import GraphWalker, RuleTable

lower_rule = RuleTable("lower")

#: the most features one value of a compiled program may have (a tile holds 256 samples of it)
MAX_BUFFER_FEATURES = 1 << 27

OPS = ("load", "store", "add", "copy", "matvec", "spmv", "scale", "threshold", "act", "binarize",
       "logic", "tree", "groupsum", "neuron", "spmax", "place", "binary", "clamp", "softmax", "layernorm")

# The 16 two-input gates in difflogic's order as word-wise bitwise expressions of `a` and `b`.
# ZERO / ONES are the all-0 / all-1 word (each renderer spells them for its word type).
GATE_EXPR = (
    "ZERO",       # 0  FALSE
    "a & b",      # 1  AND
    "a & ~b",     # 2  A AND NOT B
    "a",          # 3  A
    "~a & b",     # 4  NOT A AND B
    "b",          # 5  B
    "a ^ b",      # 6  XOR
    "a | b",      # 7  OR
    "~(a | b)",   # 8  NOR
    "~(a ^ b)",   # 9  XNOR
    "~b",         # 10 NOT B
    "a | ~b",     # 11 A OR NOT B
    "~a",         # 12 NOT A
    "~a | b",     # 13 NOT A OR B
    "~(a & b)",   # 14 NAND
    "ONES",       # 15 TRUE
)
GATE_OR, GATE_A = 7, 3

# Activations as float32 C expressions of `x` and the constant `ALPHA`; function names are the
# C99 <math.h> float functions (a renderer may map them, e.g. to CUDA's). They spell the
# definitions of ir.ACTIVATIONS: a NaN input gives NaN (relu compares `x < 0`, false for NaN),
# softplus is x above beta * x > SOFTPLUS_THRESHOLD.
ACT_EXPR = {
    "identity": "x",
    "tanh": "tanhf(x)",
    "sigmoid": "1.0f / (1.0f + expf(-x))",
    "relu": "(x < 0.0f ? 0.0f : x)",
    "leaky_relu": "(x > 0.0f ? x : ALPHA * x)",
    "elu": "(x > 0.0f ? x : ALPHA * expm1f(x))",
    "softplus": f"(x * ALPHA > {ir.SOFTPLUS_THRESHOLD:.1f}f ? x : log1pf(expf(x * ALPHA)) / ALPHA)",
    "gelu": "0.5f * x * (1.0f + erff(x * 0.70710678118654752f))",
    "silu": "x / (1.0f + expf(-x))",
    "hardtanh": "(x < -ALPHA ? -ALPHA : (x > ALPHA ? ALPHA : x))",
    "exp": "expf(x)",
}
assert set(ACT_EXPR) == set(ir.ACTIVATIONS), "every ir activation needs a C expression"

@dataclasses.dataclass(frozen=True)
class Buffer:
    """One value of the tile: `size` features of `elem` ('real' or 'bit')."""

    id: int
    elem: str
    size: int
    node: str
    persistent: bool = False  # survives time steps (state, recurrent sources); zeroed per tile
    offset: int = -1          # byte offset in the workspace (plan_memory fills it)


@dataclasses.dataclass(frozen=True)
class Op:
    op: str
    node: str
    kind: str
    out: int | None
    ins: tuple = ()
    attrs: dict = dataclasses.field(default_factory=dict)
    consts: dict = dataclasses.field(default_factory=dict)  # name -> numpy array

    def __post_init__(self):
        if self.op not in OPS:  # pragma: no cover - a rule bug
            raise ValueError(f"unknown op {self.op!r}")


@dataclasses.dataclass(frozen=True)
class IOSpec:
    name: str
    buffer: int
    shape: tuple
    elem: str


@dataclasses.dataclass(frozen=True)
class Program:
    """What renderers read. `prepare` returns it planned (every buffer has its offset, `tile` and
    `workspace_bytes` are set) and immutable: renderers only read it, and a compiled object can
    keep it without a renderer changing what it describes."""

    buffers: tuple[Buffer, ...]
    ops: tuple[Op, ...]
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]
    stateful: bool
    dt: float | None
    nodes: tuple[tuple[str, str], ...]  # (name, kind) in execution order, for headers
    dtype: str = "float32"              # real values: 'float32' or 'float64'
    tile: int = 0                       # samples per tile the memory plan is for (0: unplanned)
    workspace_bytes: int = 0
    discretization: str = "euler"       # how neurons step (ir.DISCRETIZATIONS)

    def __post_init__(self):
        for f in ("buffers", "ops", "inputs", "outputs", "nodes"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        for op in self.ops:
            for arr in op.consts.values():
                if isinstance(arr, np.ndarray):
                    arr.flags.writeable = False

    def node_ops(self):
        """[(node name, kind, [ops])] in execution order: one generated function per node."""
        groups: list[tuple[str, str, list[Op]]] = []
        for op in self.ops:
            if op.op in ("load", "store"):
                continue
            if groups and groups[-1][0] == op.node:
                groups[-1][2].append(op)
            else:
                groups.append((op.node, op.kind, [op]))
        return groups

    def gate_count(self) -> int:
        return sum(len(op.consts["gate"]) for op in self.ops if op.op == "logic")


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
                       graph_dtype(self.graph), discretization=self.discretization)


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


def operands(op: Op) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A logic op's operands as (buffer of a, index of a, buffer of b, index of b): a logic op
    may read several buffers (after `bypass_copies`); consts `a_in` / `b_in` then give each
    operand's slot in `ins` (absent: slot 0)."""
    c, ins = op.consts, np.asarray(op.ins, np.int64)
    n = c["gate"].size
    a_in = c.get("a_in", np.zeros(n, np.int64))
    b_in = c.get("b_in", np.zeros(n, np.int64))
    return ins[a_in], c["a"].astype(np.int64), ins[b_in], c["b"].astype(np.int64)


def with_operands(op: Op, buf_a, a, buf_b, b, gate=None, **changes) -> Op:
    """`op` reading the given operands (its `ins` rebuilt from the buffers they name)."""
    gate = op.consts["gate"] if gate is None else gate
    ins = tuple(int(x) for x in np.unique(np.concatenate([buf_a, buf_b]))) or op.ins[:1]
    slot = {bid: k for k, bid in enumerate(ins)}
    consts = {"a": np.asarray(a, np.int32), "b": np.asarray(b, np.int32),
              "gate": np.asarray(gate, np.uint8)}
    if len(ins) > 1:
        consts["a_in"] = np.array([slot[x] for x in buf_a.tolist()], np.int32)
        consts["b_in"] = np.array([slot[x] for x in buf_b.tolist()], np.int32)
    attrs = dict(op.attrs, n_out=len(consts["gate"]), **changes)
    return dataclasses.replace(op, ins=ins, consts=consts, attrs=attrs)


def _renumber(bufs: np.ndarray, idx: np.ndarray, target: int, mapping: np.ndarray) -> np.ndarray:
    """idx with `mapping` applied where the operand's buffer is `target`."""
    out = idx.copy()
    sel = bufs == target
    out[sel] = mapping[idx[sel]]
    return out


def _bit_readers(ops) -> dict[int, list[int]]:
    readers: dict[int, list[int]] = {}
    for k, op in enumerate(ops):
        for b in set(op.ins):
            readers.setdefault(b, []).append(k)
    return readers


def bypass_copies(program: Program) -> Program:
    """Skip gates that only copy a bit: a reader of a copy reads the copied bit where it was
    made (from an earlier buffer, so a logic op may read several buffers). Copies are A / B and
    any gate on one bit twice that gives that bit (AND(x, x), OR(x, x)); the graph optimiser
    leaves them because a LogicLayer reads only the layer before it. Gates no one reads any more
    are then removed from ops whose every reader is a logic op. Persistent buffers (state,
    recurrent values) are never read around: their value changes within a step."""
    table = ir.GATE_TABLE.astype(np.int64)
    persistent = {b.id for b in program.buffers if b.persistent}
    ops = list(program.ops)
    made_by = {op.out: k for k, op in enumerate(ops) if op.op == "logic"}
    for k, op in enumerate(ops):
        if op.op != "logic":
            continue
        ba, a, bb, b = operands(op)
        changed = False
        for buf, idx in ((ba, a), (bb, b)):
            for src in np.unique(buf).tolist():
                p = made_by.get(src)
                if p is None or src in persistent:
                    continue
                pa_buf, pa, pb_buf, pb = operands(ops[p])
                g = ops[p].consts["gate"].astype(np.int64)
                same = (pa_buf == pb_buf) & (pa == pb)
                copy_a = (g == 3) | (same & (table[g, 0] == 0) & (table[g, 3] == 1))
                copy_b = (g == 5) & ~copy_a
                sel = np.flatnonzero(buf == src)
                i = idx[sel]
                for copy, cb, ci in ((copy_a, pa_buf, pa), (copy_b, pb_buf, pb)):
                    hit = copy[i] & ~np.isin(cb[i], list(persistent))
                    if hit.any():  # the copy's own operand is already a bit no copy made
                        buf[sel[hit]] = cb[i[hit]]
                        idx[sel[hit]] = ci[i[hit]]
                        changed = True
        if changed:
            ops[k] = with_operands(op, ba, a, bb, b)
    # remove what no one reads, last op first (its reads then free gates of earlier ops)
    fixed = {o.buffer for o in program.outputs} | persistent
    for k in range(len(ops) - 1, -1, -1):
        op = ops[k]
        if op.op != "logic" or op.out in fixed:
            continue
        readers = _bit_readers(ops).get(op.out, [])
        if any(ops[r].op != "logic" for r in readers):
            continue
        live = np.zeros(op.consts["gate"].size, bool)
        for r in readers:
            rb_a, ra, rb_b, rb = operands(ops[r])
            live[ra[rb_a == op.out]] = True
            live[rb[rb_b == op.out]] = True
        if live.all():
            continue
        renumber = np.cumsum(live) - 1
        ba, a, bb, b = operands(op)
        ops[k] = with_operands(op, ba[live], a[live], bb[live], b[live], op.consts["gate"][live])
        for r in readers:
            rb_a, ra, rb_b, rb = operands(ops[r])
            ops[r] = with_operands(ops[r], rb_a, _renumber(rb_a, ra, op.out, renumber), rb_b,
                                   _renumber(rb_b, rb, op.out, renumber))
    sizes = {op.out: op.consts["gate"].size for op in ops if op.op == "logic"}
    buffers = tuple(dataclasses.replace(b, size=int(sizes.get(b.id, b.size)))
                    for b in program.buffers)
    return dataclasses.replace(program, ops=tuple(ops), buffers=buffers)


def relayout_logic(program: Program) -> Program:
    """Reorder each logic op's gates by (gate id, first input) when nothing but logic ops (or
    GroupSums, keeping every gate inside its group) read its output, and renumber the readers'
    indices. The op is then `positional`: runs of one gate id write consecutive outputs, so a
    target's tight loop per run streams its stores and reads its `a` inputs in order. Values are
    unchanged: only the order of bits inside the buffer moves."""
    readers = _bit_readers(program.ops)
    fixed = {o.buffer for o in program.outputs} | {b.id for b in program.buffers if b.persistent}
    ops = list(program.ops)
    for k, op in enumerate(ops):
        if op.op != "logic" or op.out in fixed:
            continue
        rs = readers.get(op.out, [])
        if not rs or any(ops[r].op not in ("logic", "groupsum") for r in rs):
            continue
        ba, a, bb, b = operands(op)
        gate = op.consts["gate"]
        keys = [a, ba, gate]
        groups = {ops[r].attrs["m"] for r in rs if ops[r].op == "groupsum"}
        if len(groups) > 1:
            continue
        if groups:
            keys.append(np.arange(gate.size) // groups.pop())
        perm = np.lexsort(keys)
        inv = np.empty_like(perm)
        inv[perm] = np.arange(perm.size)
        ops[k] = with_operands(op, ba[perm], a[perm], bb[perm], b[perm], gate[perm],
                               positional=True)
        for r in rs:
            if ops[r].op == "logic":
                rb_a, ra, rb_b, rb = operands(ops[r])
                ops[r] = with_operands(ops[r], rb_a, _renumber(rb_a, ra, op.out, inv), rb_b,
                                       _renumber(rb_b, rb, op.out, inv))
    return dataclasses.replace(program, ops=tuple(ops))


def plan_memory(program: Program, tile: int, align: int = 64) -> Program:
    """Assign workspace offsets for tiles of `tile` samples (first fit over freed holes, by
    liveness): a real feature takes tile x 4 (float64: 8) bytes, a bit feature tile / 8."""
    real_bytes = (8 if program.dtype == "float64" else 4) * tile
    bit_bytes = tile // 8
    last_use: dict[int, int] = {}
    for i, op in enumerate(program.ops):
        for b in op.ins:
            last_use[b] = i
        for b in op.attrs.get("state", ()):
            last_use[b] = len(program.ops)
    for o in program.outputs:
        last_use[o.buffer] = max(last_use.get(o.buffer, 0), len(program.ops) - 1)
    free: list[tuple[int, int]] = []  # (offset, size) holes
    top = 0
    offset: dict[int, int] = {}

    def nbytes(b: Buffer) -> int:
        n = b.size * (real_bytes if b.elem == "real" else bit_bytes)
        return max(align, -(-n // align) * align)

    def alloc(b: Buffer):
        nonlocal top
        need = nbytes(b)
        for k, (off, size) in enumerate(free):
            if size >= need:
                offset[b.id] = off
                if size > need:
                    free[k] = (off + need, size - need)
                else:
                    free.pop(k)
                return
        offset[b.id] = top
        top += need

    def release(b: Buffer):
        free.append((offset[b.id], nbytes(b)))
        free.sort()
        merged: list[tuple[int, int]] = []
        for off, size in free:
            if merged and merged[-1][0] + merged[-1][1] == off:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            else:
                merged.append((off, size))
        free[:] = merged

    for b in program.buffers:  # persistent buffers live for the whole tile
        if b.persistent:
            alloc(b)
    for i, op in enumerate(program.ops):
        outs = [op.out] if op.out is not None else []
        for b in outs:
            if b not in offset:
                alloc(program.buffers[b])
        for b in set(op.ins):
            buf = program.buffers[b]
            if not buf.persistent and last_use.get(b) == i and b not in outs:
                release(buf)
        for b in outs:  # written but never read (a dead value): free at once
            buf = program.buffers[b]
            if not buf.persistent and b not in last_use:
                release(buf)
    buffers = tuple(dataclasses.replace(b, offset=offset.get(b.id, -1)) for b in program.buffers)
    return dataclasses.replace(program, buffers=buffers, tile=int(tile),
                               workspace_bytes=max(top, align))


def prepare(graph: ir.Graph, backend: str, tile: int, dt: float | None = None,
            supported: set | None = None, optimize: bool = True,
            discretization: str | None = None, multi_source: bool = False) -> Program:
    """The lowering pipeline every renderer starts from: polyir.optimize (unless told not to),
    lower, skip copy gates (`bypass_copies`, for a target whose logic ops may read several
    buffers: `multi_source`), relayout the logic ops, plan the workspace for `tile` samples. The
    Program it returns is complete and immutable."""
    if optimize:
        graph = optimize_graph(graph)
    program = lower(graph, backend, dt=dt, supported=supported, discretization=discretization)
    if optimize and multi_source:
        program = bypass_copies(program)
    return plan_memory(relayout_logic(program), tile)


# ---------------------------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------------------------

def _one(values: dict, name: str) -> int:
    if "input" not in values:
        raise GraphError("has no input value at this step (only a recurrent edge feeds it)",
                         node=name, field="edges", fix="feed it from a non-recurrent edge too")
    return values["input"]


def _f32(a) -> np.ndarray:
    """Real parameters travel as float64 (exact for float32 ones); the renderer writes them in
    the program's dtype."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64))


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


@lower_rule(ir.Input)
def _input(ctx, name, node, values):  # pragma: no cover - Inputs are fed by `load` ops
    raise GraphError("an Input is fed, never evaluated", node=name)


@lower_rule(ir.Output)
def _output(ctx, name, node, values):
    return _one(values, name)


def _spike_fed(ctx, name) -> bool:
    """Whether every value reaching `name`'s input is mostly zero: spikes of a spiking neuron,
    or a graph Input of a time-stepped graph (a spike train), seen through Flattens."""
    sources = (ctx.inputs[name].get("input", []) + ctx.recurrent[name].get("input", []))
    for src in sources:
        node = ctx.graph.nodes[src]
        if isinstance(node, ir.Flatten):
            if not _spike_fed(ctx, src):
                return False
        elif not ((isinstance(node, ir.Neuron) and type(node).spike is not None)
                  or (isinstance(node, ir.Input) and ctx.stateful)):
            return False
    return bool(sources)


@lower_rule(ir.Affine, ir.Linear)
def _affine(ctx, name, node, values):
    """A mat-vec. Fed by spikes (and with finite weights, so that skipping a zero input changes
    nothing: 0 * inf would be NaN) it also carries the weight transposed, `weight_t` (in, out),
    and `sparse_input`: a renderer may then add the contiguous weight rows of the non-zero inputs
    only, in input order, which gives the dense sum's value exactly."""
    x = _one(values, name)
    w = _f32(node.weight)
    bias = _f32(node.bias) if isinstance(node, ir.Affine) else None
    out = ctx.result(name, "real", w.shape[0])
    consts = {"weight": w} if bias is None else {"weight": w, "bias": bias}
    sparse = _spike_fed(ctx, name) and bool(np.isfinite(w).all())
    if sparse:
        consts["weight_t"] = np.ascontiguousarray(w.T)
    return ctx.emit("matvec", name, out, (x,), n_in=w.shape[1], n_out=w.shape[0],
                    sparse_input=sparse, consts=consts)


@lower_rule(ir.Scale)
def _scale(ctx, name, node, values):
    x = _one(values, name)
    s = _f32(node.scale).reshape(-1)
    return ctx.emit("scale", name, ctx.result(name, "real", s.size), (x,), n=s.size,
                    consts={"scale": s})


@lower_rule(ir.Threshold)
def _threshold(ctx, name, node, values):
    x = _one(values, name)
    t = _f32(node.threshold).reshape(-1)
    return ctx.emit("threshold", name, ctx.result(name, "real", t.size), (x,), n=t.size,
                    consts={"threshold": t})


@lower_rule(ir.Activation)
def _activation(ctx, name, node, values):
    x = _one(values, name)
    n = ctx.size(x)
    return ctx.emit("act", name, ctx.result(name, "real", n), (x,), n=n, fn=node.fn,
                    alpha=float(node.alpha))


@lower_rule(ir.Flatten)
def _flatten(ctx, name, node, values):
    return _one(values, name)  # feature-major C order: flattening moves nothing


def _csr(rows: list[np.ndarray], cols: list[np.ndarray], vals: list[np.ndarray], n_out: int):
    """CSR arrays from (row, col, val) triples."""
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    v = np.concatenate(vals) if vals else np.zeros(0, np.float64)
    order = np.argsort(r, kind="stable")
    r, c, v = r[order], c[order], v[order]
    ptr = np.zeros(n_out + 1, np.int64)
    np.add.at(ptr, r + 1, 1)
    return np.cumsum(ptr).astype(np.int32), c.astype(np.int32), v.astype(np.float64)


@lower_rule(ir.Conv1d, ir.Conv2d)
def _conv(ctx, name, node, values):
    """Convolution as a sparse matrix (one row per output element, one entry per weight tap
    that lands inside the input). Taps on the zero padding add 0 * w: nothing, unless w is NaN or
    inf (then NaN, as torch's padded zeros give), folded into that row's bias."""
    x = _one(values, name)
    in_shape = ctx.types[ctx.inputs[name]["input"][0]].shape
    out_shape = ctx.types[name].shape
    w = _f32(node.weight)
    nd = w.ndim - 2
    as_t = (lambda v: tuple(v) if isinstance(v, tuple) else (int(v),) * nd)
    stride, dil = as_t(node.stride), as_t(node.dilation)
    pad = tuple(begin for begin, _ in node.pads)
    c_out, c_in_g = w.shape[:2]
    g = node.groups
    co_per_g = c_out // g
    spatial_in, spatial_out = in_shape[1:], out_shape[1:]
    rows, cols, vals = [], [], []
    out_pos = np.stack(np.meshgrid(*[np.arange(n) for n in spatial_out], indexing="ij"), -1)
    out_pos = out_pos.reshape(-1, nd)
    n_sp_out = out_pos.shape[0]
    padding_nan = np.zeros(c_out * n_sp_out, bool)
    for co in range(c_out):
        gi = co // co_per_g
        for ci_local in range(c_in_g):
            ci = gi * c_in_g + ci_local
            for tap in np.ndindex(*w.shape[2:]):
                pos = out_pos * np.array(stride) - np.array(pad) + np.array(tap) * np.array(dil)
                ok = np.all((pos >= 0) & (pos < np.array(spatial_in)), axis=1)
                if not np.isfinite(w[(co, ci_local) + tap]):
                    padding_nan[co * n_sp_out + np.nonzero(~ok)[0]] = True
                if not ok.any():
                    continue
                src = np.ravel_multi_index(tuple(pos[ok].T), spatial_in) + ci * int(np.prod(spatial_in))
                rows.append(co * n_sp_out + np.nonzero(ok)[0])
                cols.append(src)
                vals.append(np.full(int(ok.sum()), w[(co, ci_local) + tap]))
    n_out = c_out * n_sp_out
    ptr, col, val = _csr(rows, cols, vals, n_out)
    bias = np.repeat(_f32(node.bias), n_sp_out) if node.bias is not None else np.zeros(n_out)
    bias[padding_nan] = np.nan
    out = ctx.result(name, "real", n_out)
    return ctx.emit("spmv", name, out, (x,), n_out=n_out,
                    consts={"ptr": ptr, "col": col, "val": val, "bias": bias})


def _windows(in_shape, kernel, stride, padding):
    """For a (C, H, W) input: per output element (C, OH, OW) flattened, the flat input indices of
    its window that lie inside the input (a list of arrays)."""
    c, h, w = in_shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    oy, ox = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    taps = []
    for dy in range(kh):
        for dx in range(kw):
            iy, ix = oy * sh - ph + dy, ox * sw - pw + dx
            ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
            taps.append((np.where(ok, iy * w + ix, -1)).reshape(-1))
    taps = np.stack(taps, 1)  # (OH*OW, kh*kw), -1 = padding
    per_channel = [taps + ch * h * w * (taps >= 0) for ch in range(c)]
    return np.concatenate(per_channel, 0), (c, oh, ow)  # (C*OH*OW, kh*kw)


@lower_rule(ir.SumPool2d, ir.AvgPool2d)
def _pool(ctx, name, node, values):
    x = _one(values, name)
    in_shape = ctx.types[ctx.inputs[name]["input"][0]].shape
    taps, out_shape = _windows(in_shape, node.kernel_size, node.stride, node.padding)
    weight = 1.0 if isinstance(node, ir.SumPool2d) else 1.0 / (node.kernel_size[0] *
                                                               node.kernel_size[1])
    r, c = np.nonzero(taps >= 0)
    n_out = taps.shape[0]
    ptr, col, val = _csr([r], [taps[r, c]], [np.full(r.size, weight)], n_out)
    out = ctx.result(name, "real", n_out)
    return ctx.emit("spmv", name, out, (x,), n_out=n_out,
                    consts={"ptr": ptr, "col": col, "val": val,
                            "bias": np.zeros(n_out, np.float32)})


@lower_rule(ir.Binarize)
def _binarize(ctx, name, node, values):
    """Bit (..., i*T + t, ...) of the output = x[..., i, ...] > thresholds[..., t]."""
    x = _one(values, name)
    shape = ctx.types[ctx.inputs[name]["input"][0]].shape
    ax = node._axis(shape)
    th = _f32(node.thresholds)
    t = th.shape[-1]
    n = int(np.prod(shape, dtype=np.int64))
    idx = np.arange(n).reshape(shape)
    if th.ndim == 1:
        thr = np.broadcast_to(th, shape + (t,))
    elif th.shape[:-1] == shape:
        thr = th
    else:  # per index along axis
        view = [1] * len(shape) + [t]
        view[ax] = shape[ax]
        thr = np.broadcast_to(th.reshape(view), shape + (t,))
    src = np.broadcast_to(idx[..., None], shape + (t,))
    # fold T into axis: move T next to axis, then merge
    src = np.moveaxis(src, -1, ax + 1).reshape(shape[:ax] + (shape[ax] * t,) + shape[ax + 1:])
    thr = np.moveaxis(thr, -1, ax + 1).reshape(src.shape)
    src = np.ascontiguousarray(src.reshape(-1), dtype=np.int32)
    thr = _f32(thr.reshape(-1))
    out = ctx.result(name, "bit", src.size)
    return ctx.emit("binarize", name, out, (x,), n_out=src.size, consts={"src": src, "thr": thr})


def _logic(ctx, name, x, a, b, gate, out=None):
    a = np.ascontiguousarray(a, dtype=np.int32)
    b = np.ascontiguousarray(b, dtype=np.int32)
    gate = np.ascontiguousarray(gate, dtype=np.uint8)
    if out is None:
        out = ctx.buffer("bit", gate.size, name)
    return ctx.emit("logic", name, out, (x,), n_in=ctx.size(x), n_out=gate.size,
                    consts={"a": a, "b": b, "gate": gate})


@lower_rule(ir.LogicLayer)
def _logic_layer(ctx, name, node, values):
    x = _one(values, name)
    out = ctx.result(name, "bit", node.gate.size)
    return _logic(ctx, name, x, node.a, node.b, node.gate, out)


def _tree_levels(ctx, name, x, leaves_idx, gates, final_out):
    """Reduce leaves (R, 2**d) of flat input indices (-1 = zero padding) by a gate tree, gates
    (G, 2**d - 1) level 0 first, one gate row per R / G consecutive rows (a conv kernel's
    positions share its gates), as one `tree` op. Row r's result is output bit r. Padding
    leaves read an all-zero word (a second input buffer, zeroed with the tile)."""
    rows, n_leaves = leaves_idx.shape
    t = ir.GATE_TABLE.astype(np.int64)[gates.astype(np.int64)]  # (G, L - 1, 4)
    anf = (t[..., 0] | (t[..., 0] ^ t[..., 2]) << 1 | (t[..., 0] ^ t[..., 1]) << 2
           | (t[..., 0] ^ t[..., 1] ^ t[..., 2] ^ t[..., 3]) << 3)
    ins = (x,)
    if (leaves_idx < 0).any():
        ins = (x, ctx.buffer("bit", 1, name, persistent=True))
    return ctx.emit("tree", name, final_out, ins, rows=rows, n_leaves=n_leaves,
                    group_rows=rows // gates.shape[0],
                    consts={"leaves": np.ascontiguousarray(leaves_idx, dtype=np.int32),
                            "anf": np.ascontiguousarray(anf, dtype=np.uint8)})


@lower_rule(ir.LogicTree2d)
def _logic_tree(ctx, name, node, values):
    x = _one(values, name)
    in_shape = ctx.types[ctx.inputs[name]["input"][0]].shape
    c, h, w = in_shape
    out_shape = ctx.types[name].shape
    k, oh, ow = out_shape
    (sh, sw), (ph, pw) = node.stride, node.padding
    oy, ox = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    oy, ox = oy.reshape(-1), ox.reshape(-1)
    leaves = node.leaves  # (K, L, 3) = (channel, dy, dx)
    ch, dy, dx = leaves[..., 0], leaves[..., 1], leaves[..., 2]
    iy = oy[None, :, None] * sh - ph + dy[:, None, :]  # (K, P, L)
    ix = ox[None, :, None] * sw - pw + dx[:, None, :]
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    flat = np.where(ok, (ch[:, None, :] * h + iy) * w + ix, -1)
    rows = flat.reshape(k * oh * ow, -1)  # row (k, position) in the output's C order
    return _tree_levels(ctx, name, x, rows, node.gates, ctx.result(name, "bit", k * oh * ow))


@lower_rule(ir.OrPool2d)
def _or_pool(ctx, name, node, values):
    x = _one(values, name)
    in_shape = ctx.types[ctx.inputs[name]["input"][0]].shape
    taps, out_shape = _windows(in_shape, node.kernel_size, node.stride, node.padding)
    n_out, kk = taps.shape
    width = 1 << max(1, (kk - 1).bit_length())  # leaves: a power of two >= 2
    # fill padding and the power-of-two tail with the window's first valid element (x | x = x)
    first = taps[np.arange(n_out), np.argmax(taps >= 0, axis=1)]
    if (first < 0).any():
        raise GraphError("a pooling window lies entirely in the padding", node=name,
                         field="padding", fix="use padding <= kernel_size // 2")
    leaves = np.where(taps >= 0, taps, first[:, None])
    leaves = np.concatenate([leaves, np.repeat(first[:, None], width - kk, 1)], 1)
    gates = np.full((1, width - 1), GATE_OR, np.int64)
    return _tree_levels(ctx, name, x, leaves, gates, ctx.result(name, "bit", n_out))


@lower_rule(ir.GroupSum)
def _group_sum(ctx, name, node, values):
    x = _one(values, name)
    n = ctx.size(x)
    out = ctx.result(name, "real", node.k)
    return ctx.emit("groupsum", name, out, (x,), k=node.k, m=n // node.k, tau=float(node.tau),
                    beta=float(node.beta))


def neuron_body(node) -> tuple[list[str], list[str]]:
    """C statements for one time step of neuron `node`, and the constant tables they read.

    Locals: `x` the summed input, `s_<state>` each state variable (loaded before, stored after),
    `y` the output; constants `<state>_a`, `_b`, `_c`, `_k` (the step coefficients of
    ir.Neuron.step_coefficients: s = a s + b x + c + k d, in that operation order, as torch
    applies them) and, for spiking kinds, `threshold` and `reset`. The spike, reset and their
    extension fields follow polyir.nn.neurons (the torch layer) statement by statement."""
    cls = type(node)
    lines, consts = [], []
    spk = cls.spike
    v = f"s_{spk.state}" if spk else None
    if spk:
        consts += ["threshold", "reset"]
        test = "threshold"

        def count(value):
            above = f"{value} {node.threshold_compare} {test}"
            if node.spike_rule == "multi":
                return f"({above} ? floorf({value} / {test}) : 0.0f)"
            return f"({above} ? 1.0f : 0.0f)"

        if node.reset_delay:  # the carried membrane's spikes reset it in this step
            lines.append(f"const float pending = {count(v)};")
            if node.reset_mode == "v_reset":
                lines.append(f"{v} = pending > 0.0f ? reset : {v};")
    for st in cls.states:
        expr = f"{st.name}_a * s_{st.name} + {st.name}_b * x + {st.name}_c"
        consts += [f"{st.name}_a", f"{st.name}_b", f"{st.name}_c"]
        if st.drive != "input":
            expr += f" + {st.name}_k * s_{st.drive}"
            consts.append(f"{st.name}_k")
        lines.append(f"const float n_{st.name} = {expr};")
    lines += [f"s_{st.name} = n_{st.name};" for st in cls.states]
    if not spk:
        return lines + [f"y = s_{cls.states[-1].name};"], consts
    if node.reset_delay and node.reset_mode == "subtract":
        lines.append(f"{v} = {v} - pending * threshold;")
    lines.append(f"const float z = {count(v)};")
    if not node.reset_delay:
        lines.append(f"{v} = {v} - z * threshold;" if node.reset_mode == "subtract"
                     else f"{v} = z > 0.0f ? reset : {v};")
    return lines + ["y = z;"], consts


@lower_rule(*ir.NEURONS.values())
def _neuron(ctx, name, node, values):
    x = _one(values, name)
    dt = ctx.need_dt(name)
    n = ctx.size(x)
    cls = type(node)
    wide = {f: np.asarray(a, np.float64) for f, a in node.parameters().items()}
    coeffs = cls.step_coefficients(wide, dt, ctx.discretization)
    tables = {}
    for st, q in coeffs.items():
        tables.update({f"{st}_a": q.a, f"{st}_b": q.b, f"{st}_c": q.c, f"{st}_k": q.k})
    if cls.spike:
        tables.update(threshold=wide[cls.spike.threshold], reset=wide[cls.spike.reset])
    body, used = neuron_body(node)
    consts = {k: np.broadcast_to(_f32(tables[k]).reshape(-1), (n,)).copy() for k in used}
    state = tuple(ctx.buffer("real", n, name, persistent=True) for _ in cls.states)
    out = ctx.result(name, "real", n)
    return ctx.emit("neuron", name, out, (x,), n=n, neuron=cls.__name__, dt=dt,
                    discretization=ctx.discretization, states=cls.state_names(), state=state,
                    body=body, consts=consts)


# --- everyday CNN / MLP kinds (ir/kinds/cnn.py) ---------------------------------------------------
BINARY_EXPR = {"mul": "a * b", "div": "a / b"}
assert set(BINARY_EXPR) == set(ir.BINARY_FNS), "every ir Binary fn needs a C expression"


def _in_shape(ctx, name, port="input"):
    return ctx.types[ctx.inputs[name][port][0]].shape


@lower_rule(ir.ChannelAffine)
def _channel_affine(ctx, name, node, values):
    """y = w[c] x + b[c] as a diagonal sparse matrix (one entry per element)."""
    x = _one(values, name)
    shape = _in_shape(ctx, name)
    per = int(np.prod(shape[1:], dtype=np.int64))
    n = shape[0] * per
    idx = np.arange(n)
    ptr, col, val = _csr([idx], [idx], [np.repeat(_f32(node.weight), per)], n)
    return ctx.emit("spmv", name, ctx.result(name, "real", n), (x,), n_out=n,
                    consts={"ptr": ptr, "col": col, "val": val,
                            "bias": np.repeat(_f32(node.bias), per)})


def _pool_taps(in_shape, kernel, stride, padding):
    """(taps (n_out, window), out_shape) of a max pooling on (C, L) or (C, H, W); -1 = padding."""
    if len(in_shape) == 2:
        taps, (c, _, ow) = _windows((in_shape[0], 1, in_shape[1]), (1,) + tuple(kernel),
                                    (1,) + tuple(stride), (0,) + tuple(padding))
        return taps, (c, ow)
    return _windows(in_shape, kernel, stride, padding)


@lower_rule(ir.MaxPool1d, ir.MaxPool2d)
def _max_pool(ctx, name, node, values):
    x = _one(values, name)
    taps, _ = _pool_taps(_in_shape(ctx, name), node.kernel_size, node.stride, node.padding)
    r, c = np.nonzero(taps >= 0)
    n_out = taps.shape[0]
    ptr, col, _ = _csr([r], [taps[r, c]], [np.zeros(r.size, np.float32)], n_out)
    return ctx.emit("spmax", name, ctx.result(name, "real", n_out), (x,), n_out=n_out,
                    consts={"ptr": ptr, "col": col})


@lower_rule(ir.AdaptiveAvgPool2d)
def _adaptive_avg_pool(ctx, name, node, values):
    """torch's adaptive windows as a sparse matrix of 1 / window size."""
    x = _one(values, name)
    c, h, w = _in_shape(ctx, name)
    oh, ow = node.output_size
    rows, cols, vals = [], [], []
    o = 0
    for ch in range(c):
        for y0, y1 in adaptive_windows(h, oh):
            for x0, x1 in adaptive_windows(w, ow):
                yy, xx = np.meshgrid(np.arange(y0, y1), np.arange(x0, x1), indexing="ij")
                flat = (ch * h + yy.reshape(-1)) * w + xx.reshape(-1)
                rows.append(np.full(flat.size, o))
                cols.append(flat)
                vals.append(np.full(flat.size, 1.0 / flat.size, np.float32))
                o += 1
    ptr, col, val = _csr(rows, cols, vals, o)
    return ctx.emit("spmv", name, ctx.result(name, "real", o), (x,), n_out=o,
                    consts={"ptr": ptr, "col": col, "val": val, "bias": np.zeros(o)})


@lower_rule(ir.Concat)
def _concat(ctx, name, node, values):
    """Each operand's features placed at their flat positions in the joined value."""
    out_shape = ctx.types[name].shape
    n = int(np.prod(out_shape, dtype=np.int64))
    out = ctx.result(name, "real", n)
    positions = np.arange(n).reshape(out_shape)
    axis = node.axis + len(out_shape) if node.axis < 0 else node.axis
    start = 0
    for port in operand_ports(node.n_inputs):
        x = values[port]
        shape = _in_shape(ctx, name, port)
        width = 1 if node.stack else shape[axis]
        dst = np.take(positions, np.arange(start, start + width), axis=axis)
        start += width
        ctx.emit("place", name, out, (x,), n=ctx.size(x),
                 consts={"dst": np.ascontiguousarray(dst.reshape(-1), dtype=np.int32)})
    return out


@lower_rule(ir.Binary)
def _binary(ctx, name, node, values):
    a, b = (values[p] for p in operand_ports(2))
    n = ctx.size(a)
    return ctx.emit("binary", name, ctx.result(name, "real", n), (a, b), n=n, fn=node.fn)


@lower_rule(ir.Clamp)
def _clamp(ctx, name, node, values):
    x = _one(values, name)
    n = ctx.size(x)
    return ctx.emit("clamp", name, ctx.result(name, "real", n), (x,), n=n, lo=float(node.min),
                    hi=float(node.max))


@lower_rule(ir.Softmax)
def _softmax(ctx, name, node, values):
    x = _one(values, name)
    shape = _in_shape(ctx, name)
    axis = node.axis + len(shape) if node.axis < 0 else node.axis
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    groups = int(np.prod(shape, dtype=np.int64)) // shape[axis]
    return ctx.emit("softmax", name, ctx.result(name, "real", ctx.size(x)), (x,), groups=groups,
                    n=int(shape[axis]), stride=inner, log=bool(node.log))


@lower_rule(ir.LayerNorm)
def _layer_norm(ctx, name, node, values):
    x = _one(values, name)
    m = int(np.prod(node.normalized_shape, dtype=np.int64))
    consts = {k: _f32(getattr(node, k)).reshape(-1) for k in ("weight", "bias")
              if getattr(node, k) is not None}
    return ctx.emit("layernorm", name, ctx.result(name, "real", ctx.size(x)), (x,),
                    groups=ctx.size(x) // m, m=m, eps=float(node.eps), consts=consts)
