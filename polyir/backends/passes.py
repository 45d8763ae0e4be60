"""Program -> Program passes of the lowering pipeline (`lower.prepare` runs them in order):
`bypass_copies` (readers of pass-through gates read the copied bit where it lives),
`relayout_logic` (logic ops' gates in positional order) and `plan_memory` (workspace offsets for
a tile). Each returns a new immutable Program.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .. import ir
from ..ir.errors import GraphError
from .program import Buffer, Program, operands, with_operands


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


#: gate orders of `relayout_logic`, the default first. benchmarks/logic_cpu.py (section layers)
#: measures them per layer; with random wiring 'blocked' was no faster (docs/c-abi.md)
GATE_ORDERS = ("runs", "blocked")


def relayout_logic(program: Program, order: str = "runs", tile: int = 256) -> Program:
    """Reorder each logic op's gates when nothing but logic ops (or GroupSums, keeping every gate
    inside its group) read its output, and renumber the readers' indices (the producing buffer
    is permuted, its readers follow). The op is then `positional`: runs of one gate id write
    consecutive outputs, so a target's tight loop per run streams its stores. Values are
    unchanged: only the order of bits inside the buffer moves.

    order 'runs': inside a run by first input, so the first operands are read in order.
    order 'blocked' (cache-blocked): inside a run by blocks of first inputs that fill 16 KiB of
    `tile`-sample words (half an L1 data cache), then by second input, so that both operands
    move forward inside a block."""
    if order not in GATE_ORDERS:
        raise GraphError(f"unknown gate order relayout={order!r}", field="relayout",
                         fix=f"pass one of {', '.join(map(repr, GATE_ORDERS))}")
    block = max(1, 16384 * 8 // tile)
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
        keys = [a, ba, gate] if order == "runs" else [b, a // block, ba, gate]
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
