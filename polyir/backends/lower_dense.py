"""Lowering rules of the real-valued feed-forward and CNN kinds (ir/kinds/nir.py's
Affine / Linear / Scale / Threshold / Flatten, ir/kinds/ffnn.py's Activation, ir/kinds/cnn.py):
mat-vecs, sparse matrices for convolutions and poolings, elementwise ops. Also the helpers every
rule module reads an input and a parameter with.
"""
from __future__ import annotations

import numpy as np

from .. import ir
from ..ir.errors import GraphError
from ..ir.kinds.cnn import adaptive_windows, operand_ports
from .program import lower_rule


def one_input(values: dict, name: str) -> int:
    if "input" not in values:
        raise GraphError("has no input value at this step (only a recurrent edge feeds it)",
                         node=name, field="edges", fix="feed it from a non-recurrent edge too")
    return values["input"]


def real_table(a) -> np.ndarray:
    """Real parameters travel as float64 (exact for float32 ones); the renderer writes them in
    the program's dtype."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64))



def source_shape(ctx, name, port="input"):
    """The shape of the value reaching `name`'s `port`, whether its edge is read in this step or
    one step late (a recurrent edge: a layer inside a cycle through a neuron)."""
    sources = ctx.inputs[name].get(port) or ctx.recurrent[name][port]
    return ctx.types[sources[0]].shape


@lower_rule(ir.Input)
def _input(ctx, name, node, values):  # pragma: no cover - Inputs are fed by `load` ops
    raise GraphError("an Input is fed, never evaluated", node=name)


@lower_rule(ir.Output)
def _output(ctx, name, node, values):
    return one_input(values, name)


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
    x = one_input(values, name)
    w = real_table(node.weight)
    bias = real_table(node.bias) if isinstance(node, ir.Affine) else None
    out = ctx.result(name, "real", w.shape[0])
    consts = {"weight": w} if bias is None else {"weight": w, "bias": bias}
    sparse = _spike_fed(ctx, name) and bool(np.isfinite(w).all())
    if sparse:
        consts["weight_t"] = np.ascontiguousarray(w.T)
    return ctx.emit("matvec", name, out, (x,), n_in=w.shape[1], n_out=w.shape[0],
                    sparse_input=sparse, consts=consts)


def _per_element(op: str, field: str):
    """The rule of a kind that combines each element with its own entry of one table (the op
    and its table share the field's name)."""
    def rule(ctx, name, node, values):
        x = one_input(values, name)
        table = real_table(getattr(node, field)).reshape(-1)
        return ctx.emit(op, name, ctx.result(name, "real", table.size), (x,), n=table.size,
                        consts={field: table})
    return rule


lower_rule(ir.Scale)(_per_element("scale", "scale"))
lower_rule(ir.Threshold)(_per_element("threshold", "threshold"))


@lower_rule(ir.Activation)
def _activation(ctx, name, node, values):
    x = one_input(values, name)
    n = ctx.size(x)
    return ctx.emit("act", name, ctx.result(name, "real", n), (x,), n=n, fn=node.fn,
                    alpha=float(node.alpha))


@lower_rule(ir.Flatten)
def _flatten(ctx, name, node, values):
    return one_input(values, name)  # feature-major C order: flattening moves nothing


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
    x = one_input(values, name)
    in_shape = source_shape(ctx, name)
    out_shape = ctx.types[name].shape
    w = real_table(node.weight)
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
    bias = np.repeat(real_table(node.bias), n_sp_out) if node.bias is not None else np.zeros(n_out)
    bias[padding_nan] = np.nan
    out = ctx.result(name, "real", n_out)
    return ctx.emit("spmv", name, out, (x,), n_out=n_out,
                    consts={"ptr": ptr, "col": col, "val": val, "bias": bias})


def pool_windows(in_shape, kernel, stride, padding):
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
    x = one_input(values, name)
    in_shape = source_shape(ctx, name)
    taps, out_shape = pool_windows(in_shape, node.kernel_size, node.stride, node.padding)
    weight = 1.0 if isinstance(node, ir.SumPool2d) else 1.0 / (node.kernel_size[0] *
                                                               node.kernel_size[1])
    r, c = np.nonzero(taps >= 0)
    n_out = taps.shape[0]
    ptr, col, val = _csr([r], [taps[r, c]], [np.full(r.size, weight)], n_out)
    out = ctx.result(name, "real", n_out)
    return ctx.emit("spmv", name, out, (x,), n_out=n_out,
                    consts={"ptr": ptr, "col": col, "val": val,
                            "bias": np.zeros(n_out, np.float32)})



@lower_rule(ir.ChannelAffine)
def _channel_affine(ctx, name, node, values):
    """y = w[c] x + b[c] as a diagonal sparse matrix (one entry per element)."""
    x = one_input(values, name)
    shape = source_shape(ctx, name)
    per = int(np.prod(shape[1:], dtype=np.int64))
    n = shape[0] * per
    idx = np.arange(n)
    ptr, col, val = _csr([idx], [idx], [np.repeat(real_table(node.weight), per)], n)
    return ctx.emit("spmv", name, ctx.result(name, "real", n), (x,), n_out=n,
                    consts={"ptr": ptr, "col": col, "val": val,
                            "bias": np.repeat(real_table(node.bias), per)})


def _pool_taps(in_shape, kernel, stride, padding):
    """(taps (n_out, window), out_shape) of a max pooling on (C, L) or (C, H, W); -1 = padding."""
    if len(in_shape) == 2:
        taps, (c, _, ow) = pool_windows((in_shape[0], 1, in_shape[1]), (1,) + tuple(kernel),
                                    (1,) + tuple(stride), (0,) + tuple(padding))
        return taps, (c, ow)
    return pool_windows(in_shape, kernel, stride, padding)


@lower_rule(ir.MaxPool1d, ir.MaxPool2d)
def _max_pool(ctx, name, node, values):
    x = one_input(values, name)
    taps, _ = _pool_taps(source_shape(ctx, name), node.kernel_size, node.stride, node.padding)
    r, c = np.nonzero(taps >= 0)
    n_out = taps.shape[0]
    ptr, col, _ = _csr([r], [taps[r, c]], [np.zeros(r.size, np.float32)], n_out)
    return ctx.emit("spmax", name, ctx.result(name, "real", n_out), (x,), n_out=n_out,
                    consts={"ptr": ptr, "col": col})


@lower_rule(ir.AdaptiveAvgPool2d)
def _adaptive_avg_pool(ctx, name, node, values):
    """torch's adaptive windows as a sparse matrix of 1 / window size."""
    x = one_input(values, name)
    c, h, w = source_shape(ctx, name)
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
        shape = source_shape(ctx, name, port)
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
    x = one_input(values, name)
    n = ctx.size(x)
    return ctx.emit("clamp", name, ctx.result(name, "real", n), (x,), n=n, lo=float(node.min),
                    hi=float(node.max))


@lower_rule(ir.Softmax)
def _softmax(ctx, name, node, values):
    x = one_input(values, name)
    shape = source_shape(ctx, name)
    axis = node.axis + len(shape) if node.axis < 0 else node.axis
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    groups = int(np.prod(shape, dtype=np.int64)) // shape[axis]
    return ctx.emit("softmax", name, ctx.result(name, "real", ctx.size(x)), (x,), groups=groups,
                    n=int(shape[axis]), stride=inner, log=bool(node.log))


@lower_rule(ir.LayerNorm)
def _layer_norm(ctx, name, node, values):
    x = one_input(values, name)
    m = int(np.prod(node.normalized_shape, dtype=np.int64))
    consts = {k: real_table(getattr(node, k)).reshape(-1) for k in ("weight", "bias")
              if getattr(node, k) is not None}
    return ctx.emit("layernorm", name, ctx.result(name, "real", ctx.size(x)), (x,),
                    groups=ctx.size(x) // m, m=m, eps=float(node.eps), consts=consts)
