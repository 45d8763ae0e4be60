"""Relational primitives over int64 tables, in numpy: the grounding engine (polyir.nn.grounding)
joins, de-duplicates and filters with these and nothing else.

A table's rows are identified by one int64 key per row (mixed radix over the columns' ranges;
columns too wide for one int64 are first replaced by their ranks), so that de-duplication,
membership and joins are one pass: a bucket table indexed by the key where the key range is
small (the usual case: sample x node), one sort otherwise.
"""
from __future__ import annotations

import numpy as np

I64 = np.int64
#: a bucket table (one slot per possible key) is used while it is at most this many slots per row
DENSE_SLOTS_PER_ROW = 8
DENSE_MIN_SLOTS = 1 << 20


# --------------------------------------------------------------------------------------------
# relational primitives
# --------------------------------------------------------------------------------------------
def encode(left: list, right: list | None = None):
    """One int64 key per row of the given int columns (and of `right`'s columns, on the same
    scale, so that equal rows on both sides get equal keys). Returns (left keys, right keys or
    None, the key range)."""
    right = right if right is not None else []
    n = len(left[0]) if left else 0
    m = len(right[0]) if right else 0
    if not left:
        return np.zeros(n, I64), (np.zeros(m, I64) if right else None), 1
    lows, spans = [], []
    for k, c in enumerate(left):
        parts = [c] + ([right[k]] if right else [])
        parts = [p for p in parts if len(p)]
        lo = min(int(p.min()) for p in parts) if parts else 0
        hi = max(int(p.max()) for p in parts) if parts else 0
        lows.append(lo)
        spans.append(hi - lo + 1)
    total = 1
    for s in spans:
        total *= s
    if total >= 1 << 62:  # too wide for one int64: dense codes per column, then recombine
        left, right, lows, spans = _compress(left, right)
        total = 1
        for s in spans:
            total *= s
    return _mix(left, lows, spans, n), (_mix(right, lows, spans, m) if right else None), total


def _mix(cols, lows, spans, n):
    key = np.zeros(n, I64)
    for c, lo, span in zip(cols, lows, spans):
        if span > 1:
            key *= span
            key += c
            if lo:
                key -= lo
    return key


def _compress(left, right):
    """Per column: replace values by their rank among the distinct values of both sides."""
    n = len(left[0])
    out_l, out_r, lows, spans = [], [], [], []
    for k, c in enumerate(left):
        both = np.concatenate([c, right[k]]) if right else c
        uniq, inv = np.unique(both, return_inverse=True)
        out_l.append(inv[:n].astype(I64))
        if right:
            out_r.append(inv[n:].astype(I64))
        lows.append(0)
        spans.append(max(len(uniq), 1))
    return out_l, out_r, lows, spans


def _dense(size: int, rows: int) -> bool:
    return size <= max(DENSE_MIN_SLOTS, DENSE_SLOTS_PER_ROW * rows)


def unique_keys(key: np.ndarray, size: int):
    """(the distinct keys ascending, each row's index among them)."""
    if len(key) == 0:
        return key, np.zeros(0, I64)
    if _dense(size, len(key)):
        seen = np.zeros(size, bool)
        seen[key] = True
        uniq = np.flatnonzero(seen)
        rank = np.cumsum(seen, dtype=I64)
        rank -= 1
        return uniq.astype(I64), rank[key]
    uniq, inv = np.unique(key, return_inverse=True)
    return uniq, inv.reshape(-1).astype(I64)


def has_duplicates(key: np.ndarray, size: int) -> bool:
    """Whether some key occurs twice: a bitmap of the key range (one byte per slot) when it is
    at most 64 slots per row, else one sort."""
    if len(key) < 2:
        return False
    if size <= max(DENSE_MIN_SLOTS, 64 * len(key)):
        seen = np.zeros(size, bool)
        seen[key] = True
        return int(np.count_nonzero(seen)) != len(key)
    k = np.sort(key)
    return bool((k[1:] == k[:-1]).any())


def member(key: np.ndarray, of: np.ndarray, size: int) -> np.ndarray:
    """key[i] in of, for each i."""
    if len(key) == 0 or len(of) == 0:
        return np.zeros(len(key), bool)
    if _dense(size, len(key) + len(of)):
        seen = np.zeros(size, bool)
        seen[of] = True
        return seen[key]
    return np.isin(key, of)


def join_indices(kl: np.ndarray, kr: np.ndarray, size: int | None = None):
    """All pairs (i, j) with kl[i] == kr[j]. A bucket table when the key range is small (a plain
    lookup when one side's keys are distinct), else one sort of the right side."""
    nl, nr = len(kl), len(kr)
    if nl == 0 or nr == 0:
        return np.zeros(0, I64), np.zeros(0, I64)
    if size is None:
        size = int(max(kl.max(), kr.max())) + 1
    if _dense(size, nl + nr):
        count_r = np.bincount(kr, minlength=size)
        if count_r.max() <= 1:  # right keys distinct: a lookup per left row
            slot = np.full(size, -1, I64)
            slot[kr] = np.arange(nr, dtype=I64)
            ri = slot[kl]
            li = np.flatnonzero(ri >= 0)
            return li, ri[li]
        count_l = np.bincount(kl, minlength=size)
        if count_l.max() <= 1:  # left keys distinct
            slot = np.full(size, -1, I64)
            slot[kl] = np.arange(nl, dtype=I64)
            li = slot[kr]
            ri = np.flatnonzero(li >= 0)
            return li[ri], ri
        start = np.zeros(size + 1, I64)
        np.cumsum(count_r, out=start[1:])
        order = np.argsort(kr, kind="stable")
        lo, cnt = start[kl], count_r[kl]
    else:
        order = np.argsort(kr, kind="stable")
        krs = kr[order]
        lo = np.searchsorted(krs, kl, "left")
        cnt = np.searchsorted(krs, kl, "right") - lo
    total = int(cnt.sum())
    li = np.repeat(np.arange(nl, dtype=I64), cnt)
    first = np.repeat(np.cumsum(cnt) - cnt, cnt)
    ri = order[np.repeat(lo, cnt) + (np.arange(total, dtype=I64) - first)]
    return li, ri


def unique_rows(table: np.ndarray):
    """(the distinct rows, ordered by their key, and each row's index among them)."""
    if table.shape[0] == 0:
        return table, np.zeros(0, I64)
    key, _, size = encode(list(table.T))
    uniq, inv = unique_keys(key, size)
    first = np.empty(len(uniq), I64)
    first[inv] = np.arange(len(inv), dtype=I64)
    return table[first], inv


def distinct(tables: list, arity: int):
    if len(tables) == 1:
        return unique_rows(tables[0])
    table = np.concatenate(tables) if tables else np.zeros((0, 1 + arity), I64)
    return unique_rows(table)


def distinct_cols(parts: list, arity: int):
    """Like `distinct` for heads given as column lists [sample, term columns...]: the distinct
    rows (one table) and each input row's index among them."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.zeros((0, 1 + arity), I64), np.zeros(0, I64)
    cols = parts[0] if len(parts) == 1 else \
        [np.concatenate([p[k] for p in parts]) for k in range(1 + arity)]
    key, _, size = encode(cols)
    uniq, inv = unique_keys(key, size)
    del key
    first = np.empty(len(uniq), I64)
    first[inv] = np.arange(len(inv), dtype=I64)
    return np.stack([c[first] for c in cols], 1), inv


def rows_of(rows: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """The index in `rel` (distinct rows) of each row of `rows` (all present)."""
    kq, kr, size = encode(list(rows.T), list(rel.T))
    li, ri = join_indices(kq, kr, size)
    out = np.empty(len(rows), I64)
    out[li] = ri
    return out


def find_rows(rows: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """The index in `rel` (distinct rows) of each row of `rows`, -1 where absent."""
    out = np.full(len(rows), -1, I64)
    if len(rows) and len(rel):
        kq, kr, size = encode(list(rows.T), list(rel.T))
        li, ri = join_indices(kq, kr, size)
        out[li] = ri
    return out


def spread(domain, sample, binds, src, var):
    """Every binding repeated once per constant of its sample's domain, `var` bound to it."""
    d_sample = domain[:, 0]
    lo = np.searchsorted(d_sample, sample, "left")
    cnt = np.searchsorted(d_sample, sample, "right") - lo
    first = np.repeat(np.cumsum(cnt) - cnt, cnt)
    pick = np.repeat(lo, cnt) + (np.arange(int(cnt.sum()), dtype=I64) - first)
    rep = np.repeat(np.arange(len(sample), dtype=I64), cnt)
    binds = {v: c[rep] for v, c in binds.items()}
    binds[var] = domain[pick, 1]
    return sample[rep], binds, {k: s[rep] for k, s in src.items()}


def builtin_mask(name: str, vals: list, n: int) -> np.ndarray:
    if name == "@alldiff":
        keep = np.ones(n, bool)
        for a in range(len(vals)):
            for b in range(a + 1, len(vals)):
                keep &= vals[a] != vals[b]
        return keep
    a, b = vals
    return {"@eq": a == b, "@neq": a != b, "@lt": a < b, "@leq": a <= b, "@gt": a > b,
            "@geq": a >= b, "@next": b == a + 1}[name]


__all__ = ["encode", "unique_keys", "has_duplicates", "member", "join_indices", "unique_rows",
           "distinct", "distinct_cols", "rows_of", "find_rows", "spread", "builtin_mask"]
