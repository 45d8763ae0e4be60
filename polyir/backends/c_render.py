"""CRenderer: a Program spelled as one standalone C file. The tile is one machine word of
samples (TILE = `word_bits`, default 256: four uint64 lanes in a GCC/clang vector, one AVX2
register); logic ops are bit-sliced over that word, GroupSum counts bits with carry-save adders on
words, real ops loop over the tile's samples so that the compiler vectorises them. The generic
op forms are render.CStyleRenderer's; the ops here are the CPU-shaped ones; the text around them
is c_source.CSourceParts'.
"""
from __future__ import annotations

import re

import numpy as np

from ..ir.errors import GraphError
from . import c_matvec
from .c_source import CSourceParts
from .program import Op
from .render import CStyleRenderer, sort_gates

WORD_BITS = (64, 128, 256, 512)
LOGIC_MODES = ("table", "unrolled")
#: how many gates ahead a logic loop prefetches its second operand (benchmarks/logic_cpu.py: 32
#: was 5-7% faster than none and than 8 or 16 on the 784 -> 8000 x 6 net)
PREFETCH = 32


class CRenderer(CSourceParts, CStyleRenderer):
    name = "c"
    tile = 256
    lane_t = "uint64_t"
    fn_qual = "__attribute__((noinline)) static"  # small functions: fast compiles of big nets
    const_qual = "static const"
    zero_word = "((word_t){0})"
    math_names = {"expf": "polyir_expf", "tanhf": "polyir_tanhf"}
    ones_word = "(~(word_t){0})"
    prefix = "polyir_"  # of every exported symbol: several programs link into one binary

    def __init__(self, **options):
        if "word_bits" in options:
            options["tile"] = options.pop("word_bits")
        super().__init__(**options)
        if self.tile not in WORD_BITS:
            raise ValueError(f"word_bits must be one of {WORD_BITS}, got {self.tile}")
        if self.logic_mode not in LOGIC_MODES:
            raise ValueError(f"logic must be one of {LOGIC_MODES}, got {self.logic_mode!r}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.prefix):
            raise GraphError(f"symbol prefix {self.prefix!r} is not a C identifier", field="prefix",
                             fix="use letters, digits and '_', not starting with a digit")

    # --- ops with a faster shape on CPUs ----------------------------------------------------------
    def op_store(self, op: Op) -> list[str]:
        spec = self.program.outputs[op.attrs["index"]]
        n = int(np.prod(spec.shape, dtype=np.int64))
        if spec.elem != "real":
            return super().op_store(op)
        # feature-major tile -> sample-major rows: each row is written whole and in order
        return [f"real_t* dst = (real_t*)c->out[{op.attrs['index']}] + (c->t * c->batch + c->s0) * {n};",
                f"const real_t* restrict x = {self.buf(op.ins[0])};",
                "for (int64_t s = 0; s < c->nvalid; s++) {",
                f"  real_t* restrict row = dst + s * {n};",
                f"  for (int64_t i = 0; i < {n}; i++) row[i] = x[i * TILE + s];",
                "}"]

    def wbuf(self, b: int) -> str:
        return f"((word_t*)(c->ws + {self.program.buffers[b].offset}))"

    def op_load(self, op: Op) -> list[str]:
        spec = self.program.inputs[op.attrs["index"]]
        n = int(np.prod(spec.shape, dtype=np.int64))
        k = op.attrs["index"]
        if spec.elem == "real":
            return real_rows(f"(const real_t*)c->in[{k}] + (c->t * c->batch + c->s0) * {n}",
                             self.buf(op.out), n)
        return [f"word_t* yw = {self.wbuf(op.out)};",
                f"const unsigned char* src = (const unsigned char*)c->in[{k}];",
                f"if ((c->packed >> {k}) & 1) {{"] + self.packed_rows(n, "  ") + [
                "} else {"] + self.byte_rows(n, "  ") + ["}"]

    def packed_rows(self, n: int, ind: str) -> list[str]:
        """np.packbits(x, -1, bitorder='little') rows: 64 features of a sample are 8 bytes; 64
        samples x 64 features are staged and bit-transposed (16 KiB of staging)."""
        chunks, nbytes = -(-n // 64), -(-n // 8)
        group = max(1, min(chunks, 16384 // (8 * self.tile)))
        lines = [f"src += (c->t * c->batch + c->s0) * {nbytes};",
                 f"word_t blk[{group}][64];  /* [chunk][sample b]: lane l = the 64 features of sample l*64+b */",
                 f"for (int64_t q0 = 0; q0 < {chunks}; q0 += {group}) {{",
                 f"  const int64_t nq = {chunks} - q0 < {group} ? {chunks} - q0 : {group};",
                 "  for (int64_t l = 0; l < LANES; l++) {",
                 "    for (int b = 0; b < 64; b++) {",
                 "      const int64_t s = l * 64 + b;",
                 f"      const unsigned char* row = src + s * {nbytes};",
                 "      for (int64_t q = 0; q < nq; q++) {",
                 "        const int64_t f0 = 64 * (q0 + q);",
                 "        uint64_t m = 0;",
                 "        if (s < c->nvalid) {  /* little-endian hosts; fixed sizes: no memcpy call */",
                 f"          if (f0 + 64 <= {n}) memcpy(&m, row + f0 / 8, 8);",
                 f"          else memcpy(&m, row + f0 / 8, {(n % 64 + 7) // 8 or 8});",
                 "        }",
                 "        blk[q][b][l] = m;",
                 "      }", "    }", "  }",
                 "  for (int64_t q = 0; q < nq; q++) {",
                 "    polyir_transpose64w(blk[q]);  /* now blk[q][f] = the word of feature 64(q0+q)+f */",
                 "    const int64_t f0 = 64 * (q0 + q);",
                 f"    const int nf = {n} - f0 < 64 ? (int)({n} - f0) : 64;",
                 "    for (int f = 0; f < nf; f++) yw[f0 + f] = blk[q][f];",
                 "  }", "}"]
        return [ind + x for x in lines]

    def byte_rows(self, n: int, ind: str) -> list[str]:
        """One byte (0 / 1) per bit, read once in place: 8 rows at a time in order, combined
        into one byte per feature (polyir_bytes8), staged for all lanes (64 KiB: the 784 features
        of the benchmark net in one pass, 7% faster than 32 KiB), then byte-
        transposed into the feature words; a byte other than 0 / 1 sets POLYIR_ERR_NOT_BITS."""
        lines = [f"enum {{ CHUNKS = ({n} + POLYIR_VB - 1) / POLYIR_VB, TAIL = {n} % POLYIR_VB,",
                 "       STAGE = 65536 / (8 * LANES * POLYIR_VB),",
                 "       GROUP = STAGE < 1 ? 1 : STAGE < CHUNKS ? STAGE : CHUNKS };",
                 f"src += (c->t * c->batch + c->s0) * {n};",
                 "uint64_t* yl = (uint64_t*)yw;",
                 "polyir_u8v seen = {0};",
                 "unsigned char seen_tail = 0;",
                 "polyir_u64v stage[GROUP][LANES][8];  /* [chunk][lane][8-sample group] */",
                 "for (int64_t q0 = 0; q0 < CHUNKS; q0 += GROUP) {",
                 "  const int64_t nq = CHUNKS - q0 < GROUP ? CHUNKS - q0 : GROUP;",
                 "  for (int64_t l = 0; l < LANES; l++)",
                 "    for (int j = 0; j < 8; j++) {",
                 "      const unsigned char* rows[8];  /* samples past the batch repeat its last one */",
                 "      for (int r = 0; r < 8; r++) {",
                 "        const int64_t s = l * 64 + 8 * j + r;",
                 f"        rows[r] = src + (s < c->nvalid ? s : c->nvalid - 1) * {n};",
                 "      }",
                 "      for (int64_t q = 0; q < nq; q++) {  /* whole vectors (a separate loop: faster) */",
                 "        const int64_t f0 = POLYIR_VB * (q0 + q);",
                 f"        if (f0 + POLYIR_VB > {n}) break;",
                 "        stage[q][l][j] = polyir_bytes8(rows, f0, &seen);",
                 "      }",
                 "      if (TAIL && q0 + nq == CHUNKS)",
                 f"        stage[nq - 1][l][j] = polyir_bytes8_tail(rows, {n} - TAIL, TAIL, &seen_tail);",
                 "    }",
                 "  for (int64_t q = 0; q < nq; q++) {",
                 "    const int64_t f0 = POLYIR_VB * (q0 + q);",
                 f"    const int nf = {n} - f0 < POLYIR_VB ? (int)({n} - f0) : POLYIR_VB;",
                 "    for (int64_t l = 0; l < LANES; l++)",
                 "      polyir_bytes_to_lanes(stage[q][l], nf, yl + f0 * LANES + l);",
                 "  }", "}",
                 "if (polyir_not_bits(seen, seen_tail)) *c->err |= POLYIR_ERR_NOT_BITS;"]
        return [ind + x for x in lines]

    def op_matvec(self, op: Op) -> list[str]:
        """In one of c_matvec's three forms; each sums every output in input order from its
        bias, as the plain loop would."""
        n_in, n_out = op.attrs["n_in"], op.attrs["n_out"]
        form = c_matvec.form(self.program, op)
        if form == "dense":
            bias = self.const(op, "bias") if "bias" in op.consts else None
            return c_matvec.dense(n_in, n_out, bias, self.const(op, "weight"),
                                  self.buf(op.ins[0]), self.buf(op.out))
        pad = c_matvec.padded(n_out) - n_out
        wt = self.const(op, "weight_t", np.pad(op.consts["weight_t"], ((0, 0), (0, pad))))
        bias = self.const(op, "bias", np.pad(op.consts.get("bias", np.zeros(n_out)), (0, pad)))
        scratch = self.program.workspace_bytes
        if form == "rows":
            k = c_matvec.row_input(self.program, op)
            rows = f"(const real_t*)c->in[{k}] + (c->t * c->batch + c->s0) * {n_in}"
            return c_matvec.spike_fed(n_in, n_out, bias, wt, self.buf(op.out), scratch, rows=rows)
        return c_matvec.spike_fed(n_in, n_out, bias, wt, self.buf(op.out), scratch,
                                  x=self.buf(op.ins[0]))

    def load_needed(self, op: Op) -> bool:
        return op.out not in c_matvec.skipped_loads(self.program)

    def scratch_bytes(self, program) -> int:
        return c_matvec.scratch_bytes(program)

    def op_spmv(self, op: Op) -> list[str]:
        ptr, col = self.const(op, "ptr"), self.const(op, "col")
        val, bias = self.const(op, "val"), self.const(op, "bias")
        return [f"const real_t* restrict x = {self.buf(op.ins[0])};",
                f"real_t* restrict y = {self.buf(op.out)};",
                f"for (int64_t o = 0; o < {op.attrs['n_out']}; o++) {{",
                "  real_t* restrict yo = y + o * TILE;",
                f"  const real_t b0 = {bias}[o];",
                "  for (int s = 0; s < TILE; s++) yo[s] = b0;",
                f"  for (int64_t k = {ptr}[o]; k < {ptr}[o + 1]; k++) {{",
                f"    const real_t w = {val}[k];",
                f"    const real_t* restrict xi = x + (int64_t){col}[k] * TILE;",
                "    for (int s = 0; s < TILE; s++) yo[s] = MAD(w, xi[s], yo[s]);",
                "  }", "}"]

    def op_binarize(self, op: Op) -> list[str]:
        src, thr = self.const(op, "src"), self.const(op, "thr")
        return [f"const real_t* x = {self.buf(op.ins[0])};", f"lane_t* y = {self.buf(op.out)};",
                f"for (int64_t j = 0; j < {op.attrs['n_out']}; j++) {{",
                f"  const real_t* xj = x + (int64_t){src}[j] * TILE;",
                f"  const real_t t = {thr}[j];",
                "  for (int l = 0; l < LANES; l++) {",
                "    uint64_t m = 0;",
                "#if defined(POLYIR_AVX2) && !POLYIR_DOUBLE",
                "    for (int q = 0; q < 8; q++) {",
                "      polyir_v8sf v;",
                "      memcpy(&v, xj + l * 64 + q * 8, 32);",
                "      const polyir_v8si gt = v > t;",
                "      m |= (uint64_t)(unsigned)__builtin_ia32_movmskps256((polyir_v8sf)gt) << (q * 8);",
                "    }",
                "#else",
                "    for (int b = 0; b < 64; b++) m |= (uint64_t)(xj[l * 64 + b] > t) << b;",
                "#endif",
                "    LANE(y, j, l) = m;", "  }", "}"]

    def op_logic(self, op: Op) -> list[str]:
        a, b = self.logic_operands(op)
        lines = ["const word_t* restrict x = (const word_t*)c->ws;",
                 f"word_t* restrict y = {self.wbuf(op.out)};"]
        if self.logic_mode == "unrolled":
            gate = op.consts["gate"]
            for j in range(gate.size):
                lines.append(f"y[{j}] = {self.gate(int(gate[j]), f'x[{a[j]}]', f'x[{b[j]}]')};")
            return lines
        table, runs, positional = sort_gates(op, a, b)
        # the loops ask for the second operand PREFETCH gates ahead (the gathers are random: an
        # L2 miss per operand would stall); the padding keeps those reads inside the table
        width = 2 if positional else 3
        table = np.concatenate([table, np.zeros(width * (PREFETCH + 1), table.dtype)])
        sym = self.const(op, "idx", table)
        itype = self.index_type(table)
        # Run bounds come from a table behind an opaque pointer, like the indices: with literal
        # bounds gcc unrolls every short run into one huge block, and its combiner then takes
        # minutes on AVX-512 hosts; one loop per gate id keeps the code O(16) per op.
        by_gate: dict[int, list[tuple[int, int]]] = {}
        for g, lo, hi in runs:
            by_gate.setdefault(g, []).append((lo, hi))
        bounds = np.array([x for g in sorted(by_gate) for r in by_gate[g] for x in r], np.int64)
        bsym = self.const(op, "runs", bounds)
        btype = self.index_type(bounds)
        lines.append(f"const {itype}* restrict idx = (const {itype}*)polyir_opaque({sym});")
        lines.append(f"const {btype}* restrict runs = (const {btype}*)polyir_opaque({bsym});")
        r0 = 0
        for g in sorted(by_gate):
            r1 = r0 + len(by_gate[g])
            n = sum(hi - lo for lo, hi in by_gate[g])
            lines.append(f"for (int r = {r0}; r < {r1}; r++) {{  /* {n} x gate {g} */")
            if positional:
                lines += ["  for (int64_t j = runs[2 * r]; j < runs[2 * r + 1]; j++) {",
                          f"    __builtin_prefetch(&x[idx[2 * j + {2 * PREFETCH + 1}]]);",
                          "    const word_t a = x[idx[2 * j]], b = x[idx[2 * j + 1]];",
                          f"    y[j] = {self.gate(g)};", "  }", "}"]
            else:
                lines += ["  for (int64_t q = 3 * (int64_t)runs[2 * r]; q < 3 * (int64_t)runs[2 * r + 1]; q += 3) {",
                          f"    __builtin_prefetch(&x[idx[q + {3 * PREFETCH + 2}]]);",
                          "    const word_t a = x[idx[q + 1]], b = x[idx[q + 2]];",
                          f"    y[idx[q]] = {self.gate(g)};", "  }", "}"]
            r0 = r1
        return lines

    def op_tree(self, op: Op) -> list[str]:
        n, rows, per = op.attrs["n_leaves"], op.attrs["rows"], op.attrs["group_rows"]
        table = self.tree_leaves(op)
        leaves = self.const(op, "leaves", table)
        anf = self.const(op, "anf", ctype="uint16_t")  # codes 0..15
        itype = self.index_type(table)
        body = self.tree_body("word_t", "x[lv[{i}]]", "y[r]", n, "m[{g}][{k}]")
        # a kernel's gates are the same at every position: their masks are made once per kernel
        return (["const word_t* restrict x = (const word_t*)c->ws;",
                 f"word_t* restrict y = {self.wbuf(op.out)};",
                 f"const {itype}* restrict leaves = (const {itype}*)polyir_opaque({leaves});",
                 f"const uint16_t* restrict anfs = (const uint16_t*)polyir_opaque({anf});",
                 f"for (int64_t g = 0; g < {rows // per}; g++) {{",
                 f"  word_t m[{n - 1}][4];",
                 f"  for (int i = 0; i < {n - 1}; i++)",
                 "    for (int k = 0; k < 4; k++)",
                 f"      m[i][k] = (word_t){{0}} - (uint64_t)((anfs[g * {n - 1} + i] >> k) & 1);",
                 f"  for (int64_t r = g * {per}; r < (g + 1) * {per}; r++) {{",
                 f"    const {itype}* lv = leaves + r * {n};"]
                + ["    " + x for x in body] + ["  }", "}"])

    def op_groupsum(self, op: Op) -> list[str]:
        k, m = op.attrs["k"], op.attrs["m"]
        np_ = max(1, int(m).bit_length())
        beta, tau = self.num(op.attrs["beta"]), self.num(op.attrs["tau"])
        return [f"const word_t* x = {self.wbuf(op.ins[0])};", f"real_t* y = {self.buf(op.out)};",
                "word_t pl[64];",
                f"for (int64_t g = 0; g < {k}; g++) {{",
                f"  polyir_vcount(x + g * {m}, {m}, pl, {np_});",
                f"  for (int p = {np_}; p < 64; p++) pl[p] = (word_t){{0}};",
                "  polyir_transpose64w(pl);  /* lane l of pl[b] = the count of sample l*64+b */",
                "  real_t* yg = y + g * TILE;",
                "  for (int l = 0; l < LANES; l++)",
                "    for (int b = 0; b < 64; b++)",
                f"      yg[l * 64 + b] = ((real_t)pl[b][l] + {beta}) / {tau};", "}"]


def transpose_rounds(width: int) -> list[str]:
    """A square block of `width` vectors r[] transposed in registers: log2(width) rounds that
    interleave r[j] with r[j + width/2] (each round moves one bit of the row index into the
    column index), so that afterwards r[j] holds column j."""
    half = width // 2
    lo = ", ".join(f"{e}, {width + e}" for e in range(half))
    hi = ", ".join(f"{half + e}, {width + half + e}" for e in range(half))
    return [f"#if POLYIR_VL == {width}",
            f"      for (int round = 0; round < {width.bit_length() - 1}; round++) {{",
            "        polyir_vr t[POLYIR_VL];",
            f"        {c_matvec.UNROLL}",
            f"        for (int j = 0; j < {half}; j++) {{",
            f"          t[2 * j] = POLYIR_SHUFFLE(r[j], r[j + {half}], {lo});",
            f"          t[2 * j + 1] = POLYIR_SHUFFLE(r[j], r[j + {half}], {hi});",
            "        }",
            "        memcpy(r, t, sizeof t);",
            "      }",
            "#endif"]


def real_rows(src: str, y: str, n: int) -> list[str]:
    """Sample-major rows of `n` reals -> the feature-major tile. POLYIR_VL samples at a time: a
    POLYIR_VL x POLYIR_VL block (POLYIR_VL rows' next vector each) is transposed in registers and
    stored as POLYIR_VL vectors of the tile; the rows stream in order (one cache line of each in
    use at a time). The features past the last whole block, and a group of samples that ends past
    c->nvalid (whose missing samples are 0), are copied one value at a time."""
    rounds = [line for width in (2, 4, 8, 16) for line in transpose_rounds(width)]
    return [f"const real_t* src = {src};",
            f"real_t* restrict y = {y};",
            "for (int64_t s0 = 0; s0 < TILE; s0 += POLYIR_VL) {",
            "  if (s0 + POLYIR_VL <= c->nvalid) {",
            f"    const real_t* restrict rows = src + s0 * {n};",
            "    int64_t i = 0;",
            f"    for (; i + POLYIR_VL <= {n}; i += POLYIR_VL) {{",
            "      polyir_vr r[POLYIR_VL];",
            f"      {c_matvec.UNROLL}",
            f"      for (int s = 0; s < POLYIR_VL; s++) r[s] = *(const polyir_vru*)(rows + s * {n} + i);",
            *rounds,
            f"      {c_matvec.UNROLL}",
            "      for (int j = 0; j < POLYIR_VL; j++) *(polyir_vru*)(y + (i + j) * TILE + s0) = r[j];",
            "    }",
            f"    for (; i < {n}; i++)",
            f"      for (int s = 0; s < POLYIR_VL; s++) y[i * TILE + s0 + s] = rows[s * {n} + i];",
            "  } else {",
            f"    for (int64_t i = 0; i < {n}; i++)",
            "      for (int64_t s = s0; s < s0 + POLYIR_VL; s++)",
            f"        y[i * TILE + s] = s < c->nvalid ? src[s * {n} + i] : 0;",
            "  }",
            "}"]
