"""The C renderer's mat-vec (`matvec` op) in three forms, all summing each output in input order
from its bias with one MAD per term, so that they give the same values:

- rows: spike-fed, and its input is a graph Input that nothing else reads: per sample, the
  indices of its non-zero inputs are read from the input array's row (16 at a time where the
  target has AVX-512), then the weight rows of those inputs (`weight_t`, (in, out), rows padded
  to 16 values) are added into POLYIR_NACC vectors of outputs held in registers, a block of
  outputs after another. The Input's own load into the tile is skipped.
- tile: spike-fed from another op's buffer: the same, with each sample's active inputs found in
  the feature-major tile (POLYIR_VL samples per compare).
- dense: everything else, and spike-fed layers of fewer than SPARSE_MIN_OUTPUTS outputs (a weight
  row under three vectors long costs as much as the dense sum there): POLYIR_DENSE_R outputs x
  POLYIR_DENSE_S vectors of samples in registers, each input's sample vector and weights read
  once per block.

The spike-fed forms sum a sample's outputs as vectors across outputs; POLYIR_VL samples' sums
are transposed into the tile at once (log2(POLYIR_VL) rounds of two-vector shuffles).
"""
from __future__ import annotations

import numpy as np

from .program import Op, Program

#: spike-fed mat-vecs with fewer outputs take the dense form (at 10% active inputs, 512 inputs,
#: tiles of 64: equal speed at 48 outputs, dense 10% faster at 20, spike-fed 6% faster at 64)
SPARSE_MIN_OUTPUTS = 48
#: weight rows and sums of the spike-fed forms are padded to a multiple of this many values
#: (every vector width divides it)
ROW_PAD = 16
UNROLL = "#pragma GCC unroll 16"


def padded(n: int) -> int:
    return -(-n // ROW_PAD) * ROW_PAD


def row_input(program: Program, op: Op) -> int | None:
    """The index of the graph input whose rows a spike-fed mat-vec reads directly: its input
    buffer is a real Input's load that no other op, output or state reads."""
    b = op.ins[0]
    loads = [o for o in program.ops if o.op == "load" and o.out == b]
    if len(loads) != 1 or program.buffers[b].persistent:
        return None
    k = loads[0].attrs["index"]
    if program.inputs[k].elem != "real" or any(o.buffer == b for o in program.outputs):
        return None
    readers = [o for o in program.ops if b in o.ins or b in o.attrs.get("state", ())]
    return k if readers == [op] else None


def form(program: Program, op: Op) -> str:
    """'rows', 'tile' or 'dense': how the C renderer computes this mat-vec."""
    if not op.attrs.get("sparse_input") or op.attrs["n_out"] < SPARSE_MIN_OUTPUTS:
        return "dense"
    return "rows" if row_input(program, op) is not None else "tile"


def skipped_loads(program: Program) -> set[int]:
    """Buffers of graph inputs that a mat-vec reads as rows: their loads are not rendered."""
    return {op.ins[0] for op in program.ops if op.op == "matvec" and form(program, op) == "rows"}


def scratch_bytes(program: Program) -> int:
    """Workspace per thread the spike-fed forms need beyond the program's buffers: POLYIR_VL
    (at most 16) samples' active-input lists and sums."""
    need = 0
    for op in program.ops:
        if op.op == "matvec" and form(program, op) != "dense":
            need = max(need, _lists_bytes(op.attrs["n_in"]) + 16 * padded(op.attrs["n_out"]) * 8)
    return need


def _lists_bytes(n_in: int) -> int:
    return -(-(16 * (n_in + 16) * 4) // 64) * 64


def _transpose() -> str:
    out = ["/* r[s][k] -> r[k][s] for POLYIR_VL x POLYIR_VL values: round d swaps the off-diagonal",
           "   d x d blocks of each 2d x 2d block */",
           "static inline void polyir_transpose(polyir_vr* r) {"]
    for n in (16, 8, 4, 2):
        out.append(f"#{'if' if n == 16 else 'elif'} POLYIR_VL == {n}")
        d = 1
        while d < n:
            lo = ", ".join(str(k if not k & d else n + k - d) for k in range(n))
            hi = ", ".join(str(k + d if not k & d else n + k) for k in range(n))
            out += [f"  for (int i = 0; i < {n}; i++) if (!(i & {d})) {{",
                    f"    const polyir_vr a = r[i], b = r[i + {d}];",
                    f"    r[i] = POLYIR_SHUFFLE(a, b, {lo});",
                    f"    r[i + {d}] = POLYIR_SHUFFLE(a, b, {hi});",
                    "  }"]
            d *= 2
    return "\n".join(out + ["#endif", "}"])


PRELUDE = """
/* Vectors of the mat-vec kernels: the widest the target has, POLYIR_VL reals each, and how many
   a kernel holds in registers: POLYIR_NACC accumulators of outputs (spike-fed forms), and
   POLYIR_DENSE_R outputs x POLYIR_DENSE_S vectors of samples (dense form) */
#if defined(__AVX512F__)
#define POLYIR_VBYTES 64
#define POLYIR_DENSE_R 5
#define POLYIR_DENSE_S 4
#elif defined(__AVX__)
#define POLYIR_VBYTES 32
#define POLYIR_DENSE_R 3
#define POLYIR_DENSE_S 3
#else
#define POLYIR_VBYTES 16
#define POLYIR_DENSE_R 3
#define POLYIR_DENSE_S 3
#endif
#define POLYIR_NACC 8
#if POLYIR_DOUBLE
#define POLYIR_VL (POLYIR_VBYTES / 8)
typedef long long polyir_vmask __attribute__((vector_size(POLYIR_VBYTES)));
#else
#define POLYIR_VL (POLYIR_VBYTES / 4)
typedef int polyir_vmask __attribute__((vector_size(POLYIR_VBYTES)));
#endif
typedef real_t polyir_vr __attribute__((vector_size(POLYIR_VBYTES)));
typedef real_t polyir_vru __attribute__((vector_size(POLYIR_VBYTES), aligned(sizeof(real_t))));
#if defined(__clang__)
#define POLYIR_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define POLYIR_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (polyir_vmask){__VA_ARGS__})
#endif
/* c + a * b in each lane, one MAD each (the scalar loop's value) */
static inline polyir_vr polyir_vmad(real_t a, polyir_vr b, polyir_vr c) {
  polyir_vr r;
  for (int e = 0; e < POLYIR_VL; e++) r[e] = MAD(a, b[e], c[e]);
  return r;
}
static inline polyir_vr polyir_splat(real_t a) {
  polyir_vr r;
  for (int e = 0; e < POLYIR_VL; e++) r[e] = a;
  return r;
}
/* bit s set: x[s] is not 0 (NaN counts), for the POLYIR_VL values at x */
static inline uint32_t polyir_nonzero(const real_t* x) {
#if POLYIR_VL == 16 && !POLYIR_DOUBLE
  polyir_vr v;
  memcpy(&v, x, 64);
  return __builtin_ia32_cmpps512_mask(v, (polyir_vr){0}, 4 /* not equal, unordered */, 0xffff, 4);
#elif POLYIR_VL == 8 && defined(POLYIR_AVX2) && !POLYIR_DOUBLE
  polyir_v8sf v;
  memcpy(&v, x, 32);
  return (uint32_t)__builtin_ia32_movmskps256((polyir_v8sf)(v != 0.0f));
#else
  uint32_t m = 0;
  for (int s = 0; s < POLYIR_VL; s++) m |= (uint32_t)(x[s] != 0) << s;
  return m;
#endif
}
/* The indices of the non-zero values of row[0, n) (NaN counts) into act (room for n + 16: the
   AVX-512 form writes 16 at a time); returns their count */
static inline int64_t polyir_active(const real_t* restrict row, int64_t n, int32_t* restrict act) {
  int64_t na = 0, i = 0;
#if defined(__AVX512F__) && !POLYIR_DOUBLE
  typedef int polyir_v16si __attribute__((vector_size(64)));
  polyir_v16si idx = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  for (; i + 16 <= n; i += 16, idx += 16) {
    polyir_vr v;
    memcpy(&v, row + i, 64);
    const unsigned short m = __builtin_ia32_cmpps512_mask(v, (polyir_vr){0}, 4, 0xffff, 4);
    const polyir_v16si packed = __builtin_ia32_compresssi512_mask(idx, idx, m);
    memcpy(act + na, &packed, 64);
    na += __builtin_popcount(m);
  }
#endif
  for (; i < n; i++) {  /* no branch: the next slot is written either way */
    act[na] = (int32_t)i;
    na += row[i] != 0;
  }
  return na;
}
""" + _transpose() + "\n"


def spike_fed(n_in: int, n_out: int, bias: str, wt: str, y: str, scratch: int,
              rows: str | None = None, x: str | None = None) -> list[str]:
    """Per sample, its active inputs' weight rows (wt: (n_in, padded(n_out)), bias: padded(n_out)
    values) summed in POLYIR_NACC accumulator vectors, then POLYIR_VL samples' sums transposed
    into y. Inputs come from `rows` (a graph input's sample-major rows for this tile) or the tile
    `x`."""
    npad = padded(n_out)
    stride = n_in + 16
    full = f"({npad} / (POLYIR_NACC * POLYIR_VL) * (POLYIR_NACC * POLYIR_VL))"
    rem = f"({npad} / POLYIR_VL % POLYIR_NACC)"

    def block(k: str, o0: str) -> list[str]:
        return ["    {",
                f"      polyir_vr acc[{k}];",
                UNROLL,
                f"      for (int j = 0; j < {k}; j++) acc[j] = *(const polyir_vru*)({bias} + {o0} + j * POLYIR_VL);",
                "      for (int64_t q = 0; q < n; q++) {",
                "        const int64_t i = a[q];",
                f"        const real_t v = xs[i{'' if rows else ' * TILE'}];",
                f"        const real_t* restrict wi = {wt} + i * {npad} + {o0};",
                UNROLL,
                f"        for (int j = 0; j < {k}; j++) acc[j] = polyir_vmad(v, *(const polyir_vru*)(wi + j * POLYIR_VL), acc[j]);",
                "      }",
                UNROLL,
                f"      for (int j = 0; j < {k}; j++) *(polyir_vru*)(ps + {o0} + j * POLYIR_VL) = acc[j];",
                "    }"]

    lines = [f"int32_t* restrict act = (int32_t*)(c->ws + {scratch});  /* each sample's active inputs */",
             f"real_t* restrict part = (real_t*)(c->ws + {scratch + _lists_bytes(n_in)});  /* and sums */",
             f"real_t* restrict y = {y};",
             f"const real_t* restrict {'rows' if rows else 'x'} = {rows or x};",
             "int64_t na[POLYIR_VL];",
             "for (int64_t s0 = 0; s0 < TILE; s0 += POLYIR_VL) {",
             "  for (int s = 0; s < POLYIR_VL; s++) na[s] = 0;  /* samples past the batch: the bias */"]
    if rows:
        lines += ["  for (int s = 0; s < POLYIR_VL && s0 + s < c->nvalid; s++)",
                  f"    na[s] = polyir_active(rows + (s0 + s) * {n_in}, {n_in}, act + s * {stride});"]
    else:
        lines += ["  if (s0 < c->nvalid) {",
                  "    const int64_t nv = c->nvalid - s0 < POLYIR_VL ? c->nvalid - s0 : POLYIR_VL;",
                  "    const uint32_t valid = (uint32_t)((1ull << nv) - 1);",
                  f"    for (int64_t i = 0; i < {n_in}; i++) {{",
                  "      uint32_t m = polyir_nonzero(x + i * TILE + s0) & valid;",
                  f"      for (; m; m &= m - 1) {{ const int s = __builtin_ctz(m); act[s * {stride} + na[s]++] = (int32_t)i; }}",
                  "    }",
                  "  }"]
    lines += ["  for (int s = 0; s < POLYIR_VL; s++) {",
              f"    const int32_t* restrict a = act + s * {stride};",
              "    const int64_t n = na[s];",
              f"    const real_t* restrict xs = {f'rows + (s0 + s) * {n_in}' if rows else 'x + s0 + s'};",
              f"    real_t* restrict ps = part + s * {npad};",
              f"    for (int64_t o0 = 0; o0 < {full}; o0 += POLYIR_NACC * POLYIR_VL)"]
    lines += block("POLYIR_NACC", "o0")
    lines += [f"    if ({rem})"] + block(f"({rem} > 0 ? {rem} : 1)", full)
    lines += ["  }",
              f"  for (int64_t o0 = 0; o0 < {n_out}; o0 += POLYIR_VL) {{  /* sample-major -> tile */",
              "    polyir_vr r[POLYIR_VL];",
              f"    for (int s = 0; s < POLYIR_VL; s++) r[s] = *(const polyir_vru*)(part + s * {npad} + o0);",
              "    polyir_transpose(r);",
              f"    const int64_t nk = {n_out} - o0 < POLYIR_VL ? {n_out} - o0 : POLYIR_VL;",
              "    for (int64_t k = 0; k < nk; k++) *(polyir_vru*)(y + (o0 + k) * TILE + s0) = r[k];",
              "  }",
              "}"]
    return lines


def dense(n_in: int, n_out: int, bias: str | None, w: str, x: str, y: str) -> list[str]:
    """y[o] = bias[o] + sum_i w[o, i] x[i] over the tile's valid samples (rounded up to whole
    vectors); samples past them get the bias."""
    b = (lambda o: f"{bias}[{o}]") if bias else (lambda o: "0")

    def block(r: str, sv: str, o: str) -> list[str]:
        return ["    {",
                f"      polyir_vr acc[{r}][{sv}];",
                UNROLL, f"      for (int k = 0; k < {r}; k++)",
                UNROLL, f"        for (int j = 0; j < {sv}; j++) acc[k][j] = polyir_splat({b(f'{o} + k')});",
                f"      for (int64_t i = 0; i < {n_in}; i++) {{",
                f"        polyir_vr xv[{sv}];",
                UNROLL, f"        for (int j = 0; j < {sv}; j++) xv[j] = *(const polyir_vru*)(x + i * TILE + s0 + j * POLYIR_VL);",
                UNROLL, f"        for (int k = 0; k < {r}; k++) {{",
                f"          const real_t wk = {w}[({o} + k) * {n_in} + i];",
                UNROLL, f"          for (int j = 0; j < {sv}; j++) acc[k][j] = polyir_vmad(wk, xv[j], acc[k][j]);",
                "        }",
                "      }",
                UNROLL, f"      for (int k = 0; k < {r}; k++)",
                UNROLL, f"        for (int j = 0; j < {sv}; j++) *(polyir_vru*)(y + ({o} + k) * TILE + s0 + j * POLYIR_VL) = acc[k][j];",
                "    }"]

    full, rem = f"({n_out} - {n_out} % POLYIR_DENSE_R)", f"({n_out} % POLYIR_DENSE_R)"
    lines = [f"const real_t* restrict x = {x};",
             f"real_t* restrict y = {y};",
             "const int64_t nv = (c->nvalid + POLYIR_VL - 1) / POLYIR_VL * POLYIR_VL;  /* <= TILE */",
             "int64_t s0 = 0;"]
    for sv in ("POLYIR_DENSE_S", "1"):
        lines += [f"for (; s0 + {sv} * POLYIR_VL <= nv; s0 += {sv} * POLYIR_VL) {{",
                  f"  for (int64_t o = 0; o < {full}; o += POLYIR_DENSE_R)"]
        lines += block("POLYIR_DENSE_R", sv, "o")
        lines += [f"  if ({rem})"] + block(f"({rem} > 0 ? {rem} : 1)", sv, full) + ["}"]
    lines += [f"for (int64_t o = 0; o < {n_out}; o++)  /* samples past the batch: the bias */",
              f"  for (int64_t s = nv; s < TILE; s++) y[o * TILE + s] = {b('o')};"]
    return lines
