"""Lowering rules of the bit kinds (ir/kinds/logic.py, ir/kinds/groupsum.py): Binarize,
LogicLayer, LogicTree2d and OrPool2d windows as `tree` ops, GroupSum.
"""
from __future__ import annotations

import numpy as np

from .. import ir
from ..ir.errors import GraphError
from .lower_dense import one_input, pool_windows, real_table, source_shape
from .program import GATE_OR, lower_rule


@lower_rule(ir.Binarize)
def _binarize(ctx, name, node, values):
    """Bit (..., i*T + t, ...) of the output = x[..., i, ...] > thresholds[..., t]."""
    x = one_input(values, name)
    shape = source_shape(ctx, name)
    ax = node._axis(shape)
    th = real_table(node.thresholds)
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
    thr = real_table(thr.reshape(-1))
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
    x = one_input(values, name)
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
    x = one_input(values, name)
    in_shape = source_shape(ctx, name)
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
    x = one_input(values, name)
    in_shape = source_shape(ctx, name)
    taps, out_shape = pool_windows(in_shape, node.kernel_size, node.stride, node.padding)
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
    x = one_input(values, name)
    n = ctx.size(x)
    out = ctx.result(name, "real", node.k)
    return ctx.emit("groupsum", name, out, (x,), k=node.k, m=n // node.k, tau=float(node.tau),
                    beta=float(node.beta))
