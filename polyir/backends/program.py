"""The lowered program: the closed op set renderers spell, the data classes they read
(`Buffer`, `Op`, `IOSpec`, `Program`), the semantics written once for every renderer (the 16
gates as bitwise word expressions, activations, binary functions, and `RealSpelling`: how
real values are spelled for a float32 or float64 program) and `lower_rule`, the table of
per-kind rules that emit ops (the rules live in lower_dense.py, lower_logic.py, lower_neuron.py;
the walker that calls them in lower.py).

The program works on a *tile* of samples (as many as one machine word has bits in C, a block's
share on the GPU). Every value is a buffer in the tile's workspace, laid out feature-major:

- a real buffer of n features holds n x TILE floats, feature i's samples at [i * TILE + s];
- a bit buffer of n features holds n x TILE bits, feature i's word(s) carrying sample s at bit s
  (difflogic's bit-slicing: one word op evaluates a gate for a whole word of samples).

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

import numpy as np

from .. import ir
from ..ir.walk import RuleTable

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
GATE_OR = 7

def c_float(v, double: bool = False) -> str:
    """A float32 (or, with double, float64) C literal that reads back exactly."""
    v = float(v) if double else float(np.float32(v))
    if np.isnan(v):
        return "NAN"
    if np.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    s = ("%.17g" if double else "%.9g") % v
    if "e" not in s and "." not in s and "n" not in s:
        s += ".0"
    return s if double else s + "f"


@dataclasses.dataclass(frozen=True)
class RealSpelling:
    """How a program's real values are written in C-family source, chosen where code is
    emitted: the scalar type (`real_t` in generated code is a typedef of it), exact literals and
    the <math.h> function of each name (float32: float, 0.5f, expf; float64: double, 0.5, exp).
    `names` maps a C99 function to a target's own spelling (the C backend's vectorisable expf)."""

    dtype: str = "float32"  # a Program's dtype: 'float32' or 'float64'
    names: tuple = ()       # ((C99 function, target spelling), ...)

    @property
    def double(self) -> bool:
        return self.dtype == "float64"

    @property
    def type(self) -> str:
        return "double" if self.double else "float"

    def num(self, v) -> str:
        return c_float(v, self.double)

    def fn(self, name: str) -> str:
        """The function `name` (C99's double spelling: exp, tanh, floor ...) for this type."""
        c99 = name if self.double else name + "f"
        return dict(self.names).get(c99, c99)


# Activations as C expressions: ACT_EXPR[fn](spelling, x, alpha) with `x` the operand and
# `alpha` its literal, spelled for the program's real type. They spell the definitions of
# ir.ACTIVATIONS: a NaN input gives NaN (relu compares `x < 0`, false for NaN), softplus is x
# above beta * x > SOFTPLUS_THRESHOLD.
ACT_EXPR = {
    "identity": lambda r, x, a: x,
    "tanh": lambda r, x, a: f"{r.fn('tanh')}({x})",
    "sigmoid": lambda r, x, a: f"{r.num(1)} / ({r.num(1)} + {r.fn('exp')}(-{x}))",
    "relu": lambda r, x, a: f"({x} < {r.num(0)} ? {r.num(0)} : {x})",
    "leaky_relu": lambda r, x, a: f"({x} > {r.num(0)} ? {x} : {a} * {x})",
    "elu": lambda r, x, a: f"({x} > {r.num(0)} ? {x} : {a} * {r.fn('expm1')}({x}))",
    "softplus": lambda r, x, a: (f"({x} * {a} > {r.num(ir.SOFTPLUS_THRESHOLD)} ? {x} : "
                                 f"{r.fn('log1p')}({r.fn('exp')}({x} * {a})) / {a})"),
    "gelu": lambda r, x, a: (f"{r.num(0.5)} * {x} * ({r.num(1)} + "
                             f"{r.fn('erf')}({x} * {r.num(0.70710678118654752)}))"),
    "silu": lambda r, x, a: f"{x} / ({r.num(1)} + {r.fn('exp')}(-{x}))",
    "hardtanh": lambda r, x, a: f"({x} < -({a}) ? -({a}) : ({x} > {a} ? {a} : {x}))",
    "exp": lambda r, x, a: f"{r.fn('exp')}({x})",
}
assert set(ACT_EXPR) == set(ir.ACTIVATIONS), "every ir activation needs a C expression"

BINARY_EXPR = {"mul": "a * b", "div": "a / b"}
assert set(BINARY_EXPR) == set(ir.BINARY_FNS), "every ir Binary fn needs a C expression"


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
