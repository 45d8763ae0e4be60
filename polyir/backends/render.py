"""CStyleRenderer: the walk from a lowered Program to C-family source, and the tables a target
overrides (tinygrad's renderer shape: the base owns naming, loops and order; a language is mostly
class attributes plus the odd method).

Generated code works on one tile of `TILE` samples at a time through a context `c`:
  c->ws      the tile's workspace (buffers at the byte offsets passes.plan_memory assigned)
  c->in[k], c->out[k]   graph input / output k, shape (steps, batch, *shape), C order
  c->batch, c->t, c->s0, c->nvalid   samples per step, current step, first sample of the tile,
             how many of the tile's samples exist (the rest are zero padding, never stored)
Real values have the C type `real_t`, a typedef of float or double by the program's dtype
(program.RealSpelling: the type, literals and math functions, chosen where code is emitted).
Bit buffers are addressed by 64- (or 32-) bit lanes through LANE(p, feature, lane); a target may
group several lanes into one word (the C target's vector words).

A target spells: `loop2` (a (feature, sample) loop: nested in C, one thread-strided loop on a
GPU), `sync` (a barrier between ops), qualifiers, `lane_t`, the all-zero / all-one words, and
function-name maps. Ops that need a faster shape on one target are methods it overrides.
"""
from __future__ import annotations

import re

import numpy as np

from .program import ACT_EXPR, BINARY_EXPR, GATE_EXPR, Op, Program, RealSpelling, operands


def c_comment(text: str) -> str:
    """`text` (a node name, any string) as printable ASCII that cannot end or nest a C comment,
    splice a line or form a trigraph: generated code shows names only inside comments."""
    out = []
    for ch in str(text):
        if ch == "\\":
            out.append("\\\\")
        elif " " <= ch <= "~":
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out).replace("*/", "*\\/").replace("/*", "/\\*").replace("??", "?\\?")


#: C element type of a constant table -> its numpy dtype
C_TYPES = {"float": np.float32, "double": np.float64, "uint16_t": np.uint16, "int32_t": np.int32,
           "int64_t": np.int64}


def sort_gates(op: Op, a: np.ndarray | None = None, b: np.ndarray | None = None):
    """A logic op's gates as runs of one gate id, so that a target runs one tight loop per run.

    Returns (table, runs, positional). Positional ops (passes.relayout_logic) keep their order:
    table = (a, b) pairs and gate j writes output j. Others are sorted by (gate, a): table =
    (out, a, b) triples. runs = [(gate, lo, hi)] over table rows. `a`, `b` replace the op's
    operand indices (a target that addresses operands its own way)."""
    gate = op.consts["gate"].astype(np.int64)
    a = (op.consts["a"] if a is None else a).astype(np.int64)
    b = (op.consts["b"] if b is None else b).astype(np.int64)
    positional = bool(op.attrs.get("positional"))
    if positional:
        table = np.stack([a, b], 1)
    else:
        order = np.lexsort((a, gate))
        gate = gate[order]
        table = np.stack([order, a[order], b[order]], 1)
    runs = []
    if gate.size:
        cuts = np.flatnonzero(np.diff(gate)) + 1
        bounds = np.r_[0, cuts, gate.size]
        runs = [(int(gate[lo]), int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    return np.ascontiguousarray(table.reshape(-1)), runs, positional


class CStyleRenderer:
    """Program -> source text. Subclasses set the tables below and override what differs."""

    name = "c-style"
    tile = 64            # samples per tile
    lane_bits = 64       # bits per addressable lane of a bit buffer
    lane_t = "uint64_t"
    fn_qual = "static"               # qualifier of per-node functions
    const_qual = "static const"      # qualifier of constant tables
    zero_word = "((lane_t)0)"
    ones_word = "(~(lane_t)0)"
    math_names: dict[str, str] = {}  # C99 function (float spelling) -> target spelling
    logic_mode = "table"             # 'table' (one tight loop per gate id) or 'unrolled'
    # Constant tables with more than `inline_limit` values travel as data (`data_table`): the
    # source stays small and compiles in bounded time whatever the model's size.
    inline_limit = 4096

    # Set per program from its dtype (`render`): how real values are spelled, and the C type
    # that generated code names `real_t`.
    scalar = RealSpelling()
    real = "float"

    def __init__(self, **options):
        for k, v in options.items():
            if not hasattr(type(self), k):
                raise TypeError(f"unknown renderer option {k!r}")
            setattr(self, k, v)

    # --- target spellings (override) ------------------------------------------------------------
    def loop2(self, i: str, n, j: str, m) -> tuple[list[str], list[str]]:
        """Open/close lines of a loop over i < n, j < m (j fastest)."""
        return ([f"for (int64_t {i} = 0; {i} < {n}; {i}++) {{",
                 f"  for (int64_t {j} = 0; {j} < {m}; {j}++) {{"], ["  }", "}"])

    def sync(self) -> list[str]:
        return []

    def prelude(self, program: Program) -> str:
        raise NotImplementedError

    def epilogue(self, program: Program) -> str:
        raise NotImplementedError

    def header(self, program: Program) -> str:
        return ""

    def data_table(self, arr: np.ndarray, ctype: str) -> str:
        """A table the caller passes in (`c->tab[k]`, k in the order of `self.tables`): its
        values never enter the source."""
        k = len(self.tables)
        self.tables.append(np.ascontiguousarray(arr, dtype=C_TYPES[ctype]))
        return f"((const {ctype}*)c->tab[{k}])"

    def load_needed(self, op: Op) -> bool:
        """Whether a graph input's `load` into the tile is rendered (a target may read the
        input's rows in place of the tile)."""
        return True

    def scratch_bytes(self, program: Program) -> int:
        """Workspace per tile the target's op forms need beyond the program's buffers."""
        return 0

    # --- the walk -------------------------------------------------------------------------------
    def render(self, program: Program) -> str:
        if program.tile != self.tile:
            raise ValueError(f"the program is planned for tiles of {program.tile} samples, the "
                             f"{self.name} renderer writes {self.tile}: lower.prepare(..., "
                             f"tile={self.tile})")
        self.program = program
        self.scalar = RealSpelling(program.dtype, tuple(self.math_names.items()))
        self.real = self.scalar.type
        self.ws_bytes = program.workspace_bytes + self.scratch_bytes(program)
        self.consts: list[str] = []
        self.tables: list[np.ndarray] = []  # data tables, in the order the program reads them
        self.taken: set[str] = set()  # every generated symbol: made from indices and op keys,
        self.node_index: dict[str, int] = {}  # never from names (those go into comments only)
        self.node_fns: list[tuple[str, str]] = []  # (function name, IR node)
        bodies = []
        for k, op in enumerate(program.ops):
            if op.op == "load" and self.load_needed(op):
                bodies.append(self.io_function(op, f"load_{k}", self.op_load(op)))
            elif op.op == "store":
                bodies.append(self.io_function(op, f"store_{k}", self.op_store(op)))
        io_fns = list(self.node_fns)
        self.node_fns = []
        for node, kind, ops in program.node_ops():
            fn = self.symbol(f"node_{self.index_of(node)}")
            lines = []
            for op in ops:
                try:
                    body = getattr(self, f"op_{op.op}")(op)
                except Exception as exc:
                    exc.add_note(f"while rendering op {op.op!r} of node {node!r} ({kind}) for "
                                 f"{self.name}: ins {op.ins}, out {op.out}, attrs "
                                 f"{ {k: v for k, v in op.attrs.items() if k != 'state'} }")
                    raise
                lines += [f"  {{ /* {op.op}: {self.describe(op)} */"] + ["    " + x for x in body]
                lines += ["    " + x for x in self.sync()] + ["  }"]
            bodies.append(f"/* node '{c_comment(node)}' ({kind}) */\n"
                          f"{self.fn_qual} void {fn}(const pctx* c) {{\n" + "\n".join(lines) + "\n}\n")
            self.node_fns.append((fn, node))
        loads = [(n, node) for n, node in io_fns if n.startswith("load_")]
        stores = [(n, node) for n, node in io_fns if n.startswith("store_")]
        self.step_names = loads + self.node_fns + stores  # (function, IR node) in call order
        self.step_calls = [fn for fn, _ in self.step_names]
        parts = [self.header(program), self.prelude(program), "\n".join(self.consts),
                 "\n".join(bodies), self.epilogue(program)]
        return "\n".join(p for p in parts if p) + "\n"

    def symbol(self, base: str) -> str:
        """A new C identifier from `base` (built from indices and fixed words only)."""
        ident, k = base, 1
        while ident in self.taken:
            ident, k = f"{base}_{k}", k + 1
        self.taken.add(ident)
        return ident

    def index_of(self, node: str) -> int:
        """The node's number in execution order (what its generated symbols are named by)."""
        return self.node_index.setdefault(node, len(self.node_index))

    def io_function(self, op: Op, fn: str, body: list[str]) -> str:
        fn = self.symbol(fn)
        self.node_fns.append((fn, op.node))
        what = "input" if op.op == "load" else "output"
        return (f"/* {what} {op.attrs['index']}: node '{c_comment(op.node)}' */\n"
                f"{self.fn_qual} void {fn}(const pctx* c) {{\n"
                + "\n".join("  " + x for x in body + self.sync()) + "\n}\n")

    def num(self, v) -> str:
        """`v` as an exact literal of the program's real type."""
        return self.scalar.num(v)

    def describe(self, op: Op) -> str:
        ins = ", ".join(self.bdesc(b) for b in op.ins)
        out = self.bdesc(op.out) if op.out is not None else "-"
        extra = {k: v for k, v in op.attrs.items() if k in ("fn", "alpha", "k", "tau", "beta",
                                                            "neuron", "dt", "discretization")}
        return c_comment(f"{out} <- ({ins}) {extra if extra else ''}".strip())

    def bdesc(self, b: int) -> str:
        buf = self.program.buffers[b]
        return f"{buf.elem}[{buf.size}]@{buf.offset}"

    # --- helpers ---------------------------------------------------------------------------------
    def buf(self, b: int) -> str:
        buf = self.program.buffers[b]
        t = self.real if buf.elem == "real" else "lane_t"
        return f"(({t}*)(c->ws + {buf.offset}))"

    def const(self, op: Op, key: str, arr: np.ndarray | None = None, ctype: str | None = None) -> str:
        """Emit a constant table once; returns its symbol."""
        arr = op.consts[key] if arr is None else arr
        sym = self.symbol(f"node_{self.index_of(op.node)}_{key}")
        arr = np.asarray(arr).reshape(-1)
        if ctype is None:
            ctype = self.real if arr.dtype.kind == "f" else self.index_type(arr)
        if arr.size == 0:
            arr = np.zeros(1, arr.dtype)
        if arr.size > self.inline_limit:
            return self.data_table(arr, ctype)
        if ctype in ("float", "double"):
            items = [self.num(v) for v in arr.tolist()]
        else:
            items = [str(int(v)) for v in arr.tolist()]
        lines = []
        for k in range(0, len(items), 16):
            lines.append("  " + ", ".join(items[k:k + 16]) + ",")
        self.consts.append(f"{self.const_qual} {ctype} {sym}[{arr.size}] = {{\n" + "\n".join(lines)
                           + "\n};")
        return sym

    @staticmethod
    def index_type(arr: np.ndarray) -> str:
        hi = int(arr.max(initial=0))
        lo = int(arr.min(initial=0))
        if lo >= 0 and hi < 1 << 16:
            return "uint16_t"
        if lo >= -(1 << 31) and hi < 1 << 31:
            return "int32_t"
        return "int64_t"

    def word_index(self, b: int) -> int:
        """Where bit buffer `b` starts, counted in features (TILE / 8 bytes each) from the
        workspace's start: ops that read several buffers address them all from there."""
        word = self.tile // 8
        offset = self.program.buffers[b].offset
        assert offset % word == 0, "plan_memory aligns buffers to whole features of a tile"
        return offset // word

    def logic_operands(self, op: Op) -> tuple[np.ndarray, np.ndarray]:
        """A logic op's operands (a, b) as features from the workspace's start: after
        passes.bypass_copies one op may read several buffers."""
        ba, a, bb, b = operands(op)
        base = {bid: self.word_index(bid) for bid in set(op.ins)}
        return (np.array([base[x] for x in ba.tolist()], np.int64) + a,
                np.array([base[x] for x in bb.tolist()], np.int64) + b)

    def gate(self, g: int, a: str = "a", b: str = "b") -> str:
        expr = GATE_EXPR[g]
        expr = re.sub(r"\ba\b", a, expr)
        expr = re.sub(r"\bb\b", b, expr)
        return expr.replace("ZERO", self.zero_word).replace("ONES", self.ones_word)

    def act(self, fn: str, alpha: float, x: str = "x") -> str:
        return ACT_EXPR[fn](self.scalar, x, self.num(alpha))

    def elementwise(self, n: int, lines: list[str]) -> list[str]:
        open_, close = self.loop2("i", n, "s", "TILE")
        return open_ + ["    const int64_t e = i * TILE + s;"] + ["    " + x for x in lines] + close

    # --- ops: generic forms, valid for any tile / lane layout -------------------------------------
    def op_load(self, op: Op) -> list[str]:
        spec = self.program.inputs[op.attrs["index"]]
        n = int(np.prod(spec.shape, dtype=np.int64))
        y = self.buf(op.out)
        if spec.elem == "real":
            open_, close = self.loop2("i", n, "s", "TILE")
            return ([f"const real_t* src = (const real_t*)c->in[{op.attrs['index']}] + "
                     f"(c->t * c->batch + c->s0) * {n};", f"real_t* y = {y};"] + open_ +
                    [f"    y[i * TILE + s] = s < c->nvalid ? src[s * {n} + i] : 0;"] + close)
        open_, close = self.loop2("j", n, "l", "LANES")
        return ([f"const unsigned char* src = (const unsigned char*)c->in[{op.attrs['index']}] + "
                 f"(c->t * c->batch + c->s0) * {n};", f"lane_t* y = {y};"] + open_ +
                ["    lane_t m = 0;",
                 "    for (int b = 0; b < LANE_BITS; b++) {",
                 "      const int64_t s = l * LANE_BITS + b;",
                 f"      if (s < c->nvalid && src[s * {n} + j]) m |= ((lane_t)1) << b;",
                 "    }", "    LANE(y, j, l) = m;"] + close)

    def op_store(self, op: Op) -> list[str]:
        spec = self.program.outputs[op.attrs["index"]]
        n = int(np.prod(spec.shape, dtype=np.int64))
        x = self.buf(op.ins[0])
        dst = (f"real_t* dst = (real_t*)c->out[{op.attrs['index']}] + (c->t * c->batch + c->s0)"
               f" * {n};")
        open_, close = self.loop2("i", n, "s", "TILE")
        if spec.elem == "real":
            return [dst, f"const real_t* x = {x};"] + open_ + [
                f"    if (s < c->nvalid) dst[s * {n} + i] = x[i * TILE + s];"] + close
        return [dst, f"const lane_t* x = {x};"] + open_ + [
            f"    if (s < c->nvalid) dst[s * {n} + i] = "
            "(real_t)((LANE(x, i, s / LANE_BITS) >> (s % LANE_BITS)) & 1);"] + close

    def op_add(self, op: Op) -> list[str]:
        a, b = op.ins
        return [f"const real_t* a = {self.buf(a)};", f"const real_t* b = {self.buf(b)};",
                f"real_t* y = {self.buf(op.out)};"] + self.elementwise(
                    self.program.buffers[op.out].size, ["y[e] = a[e] + b[e];"])

    def op_copy(self, op: Op) -> list[str]:
        src = self.program.buffers[op.ins[0]]
        if src.elem == "real":
            return [f"const real_t* x = {self.buf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};"
                    ] + self.elementwise(src.size, ["y[e] = x[e];"])
        open_, close = self.loop2("j", src.size, "l", "LANES")
        return [f"const lane_t* x = {self.buf(op.ins[0])};", f"lane_t* y = {self.buf(op.out)};"
                ] + open_ + ["    LANE(y, j, l) = LANE(x, j, l);"] + close

    def op_matvec(self, op: Op) -> list[str]:
        n_in, n_out = op.attrs["n_in"], op.attrs["n_out"]
        w = self.const(op, "weight")
        bias = self.const(op, "bias") if "bias" in op.consts else None
        open_, close = self.loop2("o", n_out, "s", "TILE")
        return ([f"const real_t* x = {self.buf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};"]
                + open_ + [f"    real_t acc = {bias + '[o]' if bias else '0'};",
                           f"    for (int64_t i = 0; i < {n_in}; i++) "
                           f"acc = MAD({w}[o * {n_in} + i], x[i * TILE + s], acc);",
                           "    y[o * TILE + s] = acc;"] + close)

    def op_spmv(self, op: Op) -> list[str]:
        n_out = op.attrs["n_out"]
        ptr, col = self.const(op, "ptr"), self.const(op, "col")
        val, bias = self.const(op, "val"), self.const(op, "bias")
        open_, close = self.loop2("o", n_out, "s", "TILE")
        return ([f"const real_t* x = {self.buf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};"]
                + open_ + [f"    real_t acc = {bias}[o];",
                           f"    for (int64_t k = {ptr}[o]; k < {ptr}[o + 1]; k++) "
                           f"acc = MAD({val}[k], x[(int64_t){col}[k] * TILE + s], acc);",
                           "    y[o * TILE + s] = acc;"] + close)

    def op_scale(self, op: Op) -> list[str]:
        s = self.const(op, "scale")
        return [f"const real_t* x = {self.buf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};"
                ] + self.elementwise(op.attrs["n"], [f"y[e] = {s}[i] * x[e];"])

    def op_threshold(self, op: Op) -> list[str]:
        t = self.const(op, "threshold")
        return [f"const real_t* x = {self.buf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};"
                ] + self.elementwise(op.attrs["n"], [
                    f"y[e] = x[e] > {t}[i] ? {self.num(1)} : {self.num(0)};"])

    def op_act(self, op: Op) -> list[str]:
        expr = self.act(op.attrs["fn"], op.attrs["alpha"])
        return [f"const real_t* xs = {self.buf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};"
                ] + self.elementwise(op.attrs["n"], ["const real_t x = xs[e];", f"y[e] = {expr};"])

    def op_binarize(self, op: Op) -> list[str]:
        src, thr = self.const(op, "src"), self.const(op, "thr")
        open_, close = self.loop2("j", op.attrs["n_out"], "l", "LANES")
        return ([f"const real_t* x = {self.buf(op.ins[0])};", f"lane_t* y = {self.buf(op.out)};"]
                + open_ + [f"    const real_t* xj = x + (int64_t){src}[j] * TILE + l * LANE_BITS;",
                           f"    const real_t t = {thr}[j];", "    lane_t m = 0;",
                           "    for (int b = 0; b < LANE_BITS; b++) m |= ((lane_t)(xj[b] > t)) << b;",
                           "    LANE(y, j, l) = m;"] + close)

    def op_logic(self, op: Op) -> list[str]:
        table, runs, positional = sort_gates(op, *self.logic_operands(op))
        idx = self.const(op, "idx", table)
        w = 2 if positional else 3
        lines = ["const lane_t* x = (const lane_t*)c->ws;", f"lane_t* y = {self.buf(op.out)};"]
        for g, lo, hi in runs:
            open_, close = self.loop2("k", hi - lo, "l", "LANES")
            out = f"{lo} + k" if positional else f"{idx}[q - 1]"
            expr = GATE_EXPR[g]
            reads = [f"const lane_t {v} = LANE(x, {idx}[q{'' if v == 'a' else ' + 1'}], l);"
                     for v in "ab" if re.search(rf"\b{v}\b", expr)]
            q = [f"    const int64_t q = {w} * ({lo} + k) + {w - 2};"] if reads or not positional else []
            lines += [f"/* {hi - lo} x gate {g} */"] + open_ + q + [
                "    " + r for r in reads] + [
                f"    LANE(y, {out}, l) = {self.gate(g)};"] + close
        return lines

    def tree_leaves(self, op: Op) -> np.ndarray:
        """The tree's leaves as word indices from the workspace's start (padding: the zero
        word of ins[1])."""
        leaves = op.consts["leaves"].astype(np.int64)
        return np.where(leaves < 0, self.word_index(op.ins[-1]), leaves + self.word_index(op.ins[0]))

    def tree_body(self, t: str, read: str, write: str, n_leaves: int, mask: str) -> list[str]:
        """Statements evaluating one row's gate tree in registers (`read` gives leaf {i}'s word,
        `write` the destination, `mask` the all-ones-or-zero word for bit {k} of gate {g}'s
        code)."""
        lines = [f"{t} v[{n_leaves}];"]
        lines += [f"v[{i}] = {read.format(i=i)};" for i in range(n_leaves)]
        g, w = 0, n_leaves // 2
        while w >= 1:
            for i in range(w):
                m = [mask.format(g=g, k=k) for k in range(4)]
                lines.append(f"{{ const {t} a = v[{2 * i}], b = v[{2 * i + 1}]; v[{i}] = {m[0]} ^ "
                             f"(a & {m[1]}) ^ (b & {m[2]}) ^ (a & b & {m[3]}); }}")
                g += 1
            w //= 2
        return lines + [f"{write} = v[0];"]

    def op_tree(self, op: Op) -> list[str]:
        n, rows, per = op.attrs["n_leaves"], op.attrs["rows"], op.attrs["group_rows"]
        leaves = self.const(op, "leaves", self.tree_leaves(op))
        anf = self.const(op, "anf", ctype="uint16_t")  # codes 0..15
        open_, close = self.loop2("r", rows, "l", "LANES")
        body = [f"const {self.index_type(self.tree_leaves(op))}* lv = {leaves} + r * {n};",
                f"const uint16_t* anf = {anf} + (r / {per}) * {n - 1};"]
        body += self.tree_body("lane_t", "LANE(x, lv[{i}], l)", "LANE(y, r, l)", n,
                               "((lane_t)0 - (lane_t)((anf[{g}] >> {k}) & 1))")
        return ([f"const lane_t* x = (const lane_t*)c->ws;", f"lane_t* y = {self.buf(op.out)};"]
                + open_ + ["    " + x for x in body] + close)

    def op_groupsum(self, op: Op) -> list[str]:
        k, m = op.attrs["k"], op.attrs["m"]
        np_ = max(1, int(m).bit_length())
        open_, close = self.loop2("g", k, "l", "LANES")
        return ([f"const lane_t* x = {self.buf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};"]
                + open_ + [f"    lane_t pl[{np_}];",
                           f"    for (int p = 0; p < {np_}; p++) pl[p] = 0;",
                           f"    for (int64_t f = g * {m}; f < (g + 1) * {m}; f++) {{",
                           "      lane_t carry = LANE(x, f, l);",
                           f"      for (int p = 0; p < {np_}; p++) {{ const lane_t t = pl[p] & carry;"
                           " pl[p] ^= carry; carry = t; }", "    }",
                           "    for (int b = 0; b < LANE_BITS; b++) {", "      int cnt = 0;",
                           f"      for (int p = 0; p < {np_}; p++) cnt |= (int)((pl[p] >> b) & 1) << p;",
                           f"      y[g * TILE + l * LANE_BITS + b] = ((real_t)cnt + "
                           f"{self.num(op.attrs['beta'])}) / {self.num(op.attrs['tau'])};",
                           "    }"] + close)

    def op_neuron(self, op: Op) -> list[str]:
        consts = {k: self.const(op, k) for k in op.consts}
        states = dict(zip(op.attrs["states"], op.attrs["state"]))
        lines = [f"const real_t* xs = {self.buf(op.ins[0])};", f"real_t* ys = {self.buf(op.out)};"]
        lines += [f"real_t* S_{s} = {self.buf(b)};" for s, b in states.items()]
        body = [f"const real_t {k} = {sym}[i];" for k, sym in consts.items()]
        body += ["const real_t x = xs[e];", "real_t y;"]
        body += [f"real_t s_{s} = S_{s}[e];" for s in states]
        body += list(op.attrs["body"])
        body += [f"S_{s}[e] = s_{s};" for s in states] + ["ys[e] = y;"]
        return lines + self.elementwise(op.attrs["n"], body)

    # --- ops of the everyday CNN / MLP kinds ------------------------------------------------------
    def math(self, name: str) -> str:
        """The <math.h> function `name` (exp, log, sqrt ...) for the program's real type on this
        target."""
        return self.scalar.fn(name)

    def op_spmax(self, op: Op) -> list[str]:
        ptr, col = self.const(op, "ptr"), self.const(op, "col")
        open_, close = self.loop2("o", op.attrs["n_out"], "s", "TILE")
        return ([f"const real_t* x = {self.buf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};"]
                + open_ + ["    real_t acc = -INFINITY;",
                           f"    for (int64_t k = {ptr}[o]; k < {ptr}[o + 1]; k++) {{",
                           f"      const real_t v = x[(int64_t){col}[k] * TILE + s];",
                           "      acc = (v > acc || v != v) ? v : acc;  /* NaN wins (torch) */",
                           "    }", "    y[o * TILE + s] = acc;"] + close)

    def op_place(self, op: Op) -> list[str]:
        dst = self.const(op, "dst")
        return [f"const real_t* x = {self.buf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};"
                ] + self.elementwise(op.attrs["n"], [f"y[(int64_t){dst}[i] * TILE + s] = x[e];"])

    def op_binary(self, op: Op) -> list[str]:
        a, b = op.ins
        return [f"const real_t* A = {self.buf(a)};", f"const real_t* B = {self.buf(b)};",
                f"real_t* y = {self.buf(op.out)};"] + self.elementwise(
                    op.attrs["n"], ["const real_t a = A[e], b = B[e];",
                                    f"y[e] = {BINARY_EXPR[op.attrs['fn']]};"])

    def op_clamp(self, op: Op) -> list[str]:
        lo, hi = self.num(op.attrs["lo"]), self.num(op.attrs["hi"])
        return [f"const real_t* x = {self.buf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};"
                ] + self.elementwise(op.attrs["n"], [
                    "const real_t v = x[e];", f"y[e] = v < {lo} ? {lo} : (v > {hi} ? {hi} : v);"])

    def op_softmax(self, op: Op) -> list[str]:
        n, stride = op.attrs["n"], op.attrs["stride"]
        exp, log = self.math("exp"), self.math("log")
        last = (f"y[PIDX(k)] = x[PIDX(k)] - mx - {log}(sum);" if op.attrs["log"]
                else f"y[PIDX(k)] = {exp}(x[PIDX(k)] - mx) / sum;")
        open_, close = self.loop2("g", op.attrs["groups"], "s", "TILE")
        return ([f"const real_t* x = {self.buf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};",
                 "#define PIDX(k) (((g / STRIDE) * N * STRIDE + g % STRIDE + (k) * STRIDE) "
                 "* TILE + s)",
                 f"#define N {n}", f"#define STRIDE {stride}"]
                + open_ + ["    real_t mx = -INFINITY, sum = 0;",
                           "    for (int64_t k = 0; k < N; k++) "
                           "mx = x[PIDX(k)] > mx ? x[PIDX(k)] : mx;",
                           f"    for (int64_t k = 0; k < N; k++) sum += {exp}(x[PIDX(k)] - mx);",
                           f"    for (int64_t k = 0; k < N; k++) {last}"] + close
                + ["#undef PIDX", "#undef N", "#undef STRIDE"])

    def op_layernorm(self, op: Op) -> list[str]:
        m = op.attrs["m"]
        w = self.const(op, "weight") if "weight" in op.consts else None
        b = self.const(op, "bias") if "bias" in op.consts else None
        z = "(x[(g * M + k) * TILE + s] - mean) * inv"
        z = f"{z} * {w}[k]" if w else z
        z = f"{z} + {b}[k]" if b else z
        open_, close = self.loop2("g", op.attrs["groups"], "s", "TILE")
        return ([f"const real_t* x = {self.buf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};",
                 f"#define M {m}"]
                + open_ + ["    real_t mean = 0, var = 0;",
                           "    for (int64_t k = 0; k < M; k++) mean += x[(g * M + k) * TILE + s];",
                           "    mean /= (real_t)M;",
                           "    for (int64_t k = 0; k < M; k++) {",
                           "      const real_t d = x[(g * M + k) * TILE + s] - mean;",
                           "      var += d * d;", "    }",
                           f"    const real_t inv = 1 / {self.math('sqrt')}(var / (real_t)M + "
                           f"{self.num(op.attrs['eps'])});",
                           f"    for (int64_t k = 0; k < M; k++) y[(g * M + k) * TILE + s] = {z};"]
                + close + ["#undef M"])
