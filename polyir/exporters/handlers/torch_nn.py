"""Export handlers for torch.nn: Linear, Conv1d/2d, Flatten, the activations polyir shares with
heyoka, AvgPool2d, Identity and Dropout (skipped: the identity in eval mode), and the everyday
CNN / MLP layers: BatchNorm1d/2d (folded into the Conv / Linear before it, else a ChannelAffine),
MaxPool1d/2d (OrPool2d on bits), AdaptiveAvgPool2d, ReLU6 / Hardtanh (Clamp), Softmax /
LogSoftmax and LayerNorm."""
from __future__ import annotations

import numpy as np
from torch import nn

from ... import ir
from . import handler, register

for _cls in (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout):
    register(_cls, None, builtin=True)


@handler(nn.Linear, builtin=True)
def _linear(ctx, name, m, values):
    w = ctx.array(m.weight)
    if m.bias is None:
        return ir.Linear(w)
    return ir.Affine(w, ctx.array(m.bias))


def _conv_common(m, ctx):
    if m.padding_mode != "zeros":
        raise ctx.error(f"padding_mode={m.padding_mode!r} has no polyir form (convolutions pad "
                        "with zeros)", field="padding", fix="use padding_mode='zeros'")
    return ctx.array(m.weight), (ctx.array(m.bias) if m.bias is not None else None)


@handler(nn.Conv1d, builtin=True)
def _conv1d(ctx, name, m, values):
    w, b = _conv_common(m, ctx)
    pad = m.padding if isinstance(m.padding, str) else int(m.padding[0])
    return ir.Conv1d(input_shape=int(ctx.input_shape[1]), weight=w, stride=int(m.stride[0]),
                     padding=pad, dilation=int(m.dilation[0]), groups=int(m.groups), bias=b)


@handler(nn.Conv2d, builtin=True)
def _conv2d(ctx, name, m, values):
    w, b = _conv_common(m, ctx)
    pad = m.padding if isinstance(m.padding, str) else tuple(int(p) for p in m.padding)
    return ir.Conv2d(input_shape=tuple(int(s) for s in ctx.input_shape[1:]), weight=w,
                     stride=tuple(int(s) for s in m.stride), padding=pad,
                     dilation=tuple(int(d) for d in m.dilation), groups=int(m.groups), bias=b)


def torch_dims_to_ir(ctx, start: int, end: int, ndim: int) -> ir.Flatten:
    """torch flatten dims (counting the batch dim) -> polyir Flatten (counting without it)."""
    s = start + ndim if start < 0 else start
    e = end + ndim if end < 0 else end
    if s == 0 or e == 0:
        raise ctx.error(f"flattens the batch dim (start_dim={start}, end_dim={end} on a "
                        f"{ndim}-D tensor)", field="start_dim",
                        fix="flatten from dim 1 on (torch counts the batch dim as 0)")
    return ir.Flatten(start_dim=s - 1, end_dim=end if end < 0 else e - 1)


@handler(nn.Flatten, builtin=True)
def _flatten(ctx, name, m, values):
    return torch_dims_to_ir(ctx, int(m.start_dim), int(m.end_dim), len(ctx.input_shape) + 1)


def _act(fn, alpha=None):
    def h(ctx, name, m, values):
        return ir.Activation(fn, None if alpha is None else float(alpha(m, ctx)))
    return h


for _cls, _fn in ((nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid"), (nn.ReLU, "relu"),
                  (nn.SiLU, "silu")):
    register(_cls, _act(_fn), builtin=True)
register(nn.LeakyReLU, _act("leaky_relu", lambda m, ctx: m.negative_slope), builtin=True)
register(nn.ELU, _act("elu", lambda m, ctx: m.alpha), builtin=True)


def check_softplus_threshold(ctx, threshold):
    if float(threshold) != 20.0:
        raise ctx.error(f"softplus threshold={threshold} differs from torch's default 20, which "
                        "polyir's softplus follows on every backend (x above beta*x > 20)",
                        field="threshold", fix="use the default threshold=20")


@handler(nn.Softplus, builtin=True)
def _softplus(ctx, name, m, values):
    check_softplus_threshold(ctx, m.threshold)
    return ir.Activation("softplus", float(m.beta))


def check_gelu(ctx, approximate):
    if approximate != "none":
        raise ctx.error(f"GELU(approximate={approximate!r}) is not polyir's gelu (the exact erf "
                        "form)", field="approximate", fix="use approximate='none'")


@handler(nn.GELU, builtin=True)
def _gelu(ctx, name, m, values):
    check_gelu(ctx, m.approximate)
    return ir.Activation("gelu")


def hardtanh_node(ctx, lo, hi):
    """clamp(x, lo, hi): the Activation hardtanh when symmetric around 0, else a Clamp."""
    lo, hi = float(lo), float(hi)
    if lo > hi:
        raise ctx.error(f"hardtanh bounds ({lo}, {hi}) are not ordered", field="min",
                        fix="use min_val <= max_val")
    if lo == -hi and hi > 0:
        return ir.Activation("hardtanh", hi)
    return ir.Clamp(lo, hi)


@handler(nn.Hardtanh, builtin=True)
def _hardtanh(ctx, name, m, values):
    return hardtanh_node(ctx, m.min_val, m.max_val)


def _pair(v):
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


@handler(nn.AvgPool2d, builtin=True)
def _avgpool(ctx, name, m, values):
    k = _pair(m.kernel_size)
    s = _pair(m.stride if m.stride is not None else m.kernel_size)
    p = _pair(m.padding)
    if m.ceil_mode:
        raise ctx.error("ceil_mode=True has no polyir form", field="kernel_size",
                        fix="use ceil_mode=False")
    if m.divisor_override is not None:
        raise ctx.error(f"divisor_override={m.divisor_override} has no polyir form",
                        field="kernel_size", fix="use the default divisor")
    if any(p) and not m.count_include_pad:
        raise ctx.error("count_include_pad=False with padding has no polyir form (polyir "
                        "counts the zero padding, torch's default)", field="padding",
                        fix="use count_include_pad=True or no padding")
    return ir.AvgPool2d(k, s, p)


def pool_args(ctx, spatial: int, kernel_size, stride=None, padding=0, dilation=1,
              ceil_mode=False, return_indices=False, on_bits=False):
    """A max pooling's arguments -> MaxPool1d / MaxPool2d (OrPool2d on bits), or a clear error."""
    def tup(v):
        return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v),) * spatial
    if stride is None or (isinstance(stride, (tuple, list)) and not stride):
        stride = kernel_size
    k, s, p, d = tup(kernel_size), tup(stride), tup(padding), tup(dilation)
    if set(d) != {1} or ceil_mode or return_indices:
        raise ctx.error("max pooling with dilation, ceil_mode or return_indices has no polyir "
                        "form", field="kernel_size",
                        fix="use a plain window (dilation=1, ceil_mode=False)")
    if on_bits:
        if spatial != 2:
            raise ctx.error("MaxPool1d on bits has no polyir kind", field="type",
                            fix="pool bits with MaxPool2d (OrPool2d)")
        return ir.OrPool2d(k, s, p)
    return (ir.MaxPool1d if spatial == 1 else ir.MaxPool2d)(k, s, p)


@handler(nn.MaxPool1d, nn.MaxPool2d, builtin=True)
def _maxpool(ctx, name, m, values):
    """Max over windows on reals; on bits (after a Binarize or logic layer) it is OR pooling."""
    spatial = 1 if isinstance(m, nn.MaxPool1d) else 2
    return pool_args(ctx, spatial, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                     m.return_indices, on_bits=ctx.input_elem == "bit")


@handler(nn.AdaptiveAvgPool2d, builtin=True)
def _adaptive_avgpool(ctx, name, m, values):
    size = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size,) * 2
    size = tuple(h if s is None else int(s) for s, h in zip(size, ctx.input_shape[1:]))
    return ir.AdaptiveAvgPool2d(size)


@handler(nn.ReLU6, builtin=True)
def _relu6(ctx, name, m, values):
    return ir.Clamp(0.0, 6.0)


def _softmax_axis(m, ctx):
    if m.dim is None:
        raise ctx.error("Softmax(dim=None) picks a dim implicitly", field="axis",
                        fix="pass dim=1 (or -1): the feature dim")
    ndim = len(ctx.input_shape) + 1
    d = m.dim + ndim if m.dim < 0 else m.dim
    if not 0 < d < ndim:
        raise ctx.error(f"dim={m.dim} is the batch dim (or out of range)", field="axis",
                        fix="normalise along a feature dim (dim >= 1, or negative)")
    return d - 1


@handler(nn.Softmax, builtin=True)
def _softmax(ctx, name, m, values):
    return ir.Softmax(_softmax_axis(m, ctx))


@handler(nn.LogSoftmax, builtin=True)
def _log_softmax(ctx, name, m, values):
    return ir.Softmax(_softmax_axis(m, ctx), log=True)


@handler(nn.LayerNorm, builtin=True)
def _layer_norm(ctx, name, m, values):
    weight = ctx.array(m.weight) if m.weight is not None else None
    bias = ctx.array(m.bias) if m.bias is not None else None
    return ir.LayerNorm(tuple(m.normalized_shape), weight, bias, float(m.eps))


def batchnorm_scale_shift(m, ctx) -> tuple[np.ndarray, np.ndarray]:
    """An eval-mode BatchNorm as y = scale * x + shift per channel (float64)."""
    if m.running_mean is None or m.running_var is None:
        raise ctx.error("BatchNorm without running statistics (track_running_stats=False) "
                        "normalises every batch by its own statistics, which no fixed layer "
                        "computes", field="type",
                        fix="train with track_running_stats=True so eval mode uses running "
                            "statistics")
    var = ctx.array(m.running_var, np.float64)
    mean = ctx.array(m.running_mean, np.float64)
    scale = 1.0 / np.sqrt(var + float(m.eps))
    if m.weight is not None:
        scale = scale * ctx.array(m.weight, np.float64)
    shift = -mean * scale
    if m.bias is not None:
        shift = shift + ctx.array(m.bias, np.float64)
    return scale, shift


def fold_batchnorm(node, scale: np.ndarray, shift: np.ndarray, label: str):
    """Conv / Affine / Linear `node` followed by y = scale * x + shift per output channel, as
    one node of the same family (a Linear gains a bias: it becomes an Affine)."""
    w = np.asarray(node.weight)
    dtype = w.dtype
    folded_w = (w.astype(np.float64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(dtype)
    old_bias = getattr(node, "bias", None)
    b = shift if old_bias is None else scale * np.asarray(old_bias, np.float64) + shift
    meta = dict(node.metadata)
    meta["folded_batchnorm"] = label
    if isinstance(node, (ir.Affine, ir.Linear)):
        return ir.Affine(folded_w, b.astype(dtype), metadata=meta)
    return node.replace(weight=folded_w, bias=b.astype(dtype), metadata=meta)


@handler(nn.BatchNorm1d, nn.BatchNorm2d, builtin=True)
def _batchnorm(ctx, name, m, values):
    """Eval-mode BatchNorm: folded into the Conv / Affine / Linear that alone feeds it (exact to
    float rounding; the folded node's metadata 'folded_batchnorm' names the BatchNorm), else a
    ChannelAffine."""
    scale, shift = batchnorm_scale_shift(m, ctx)
    dtype = ctx.float_dtype
    if len(ctx.input_shape) not in (1, 2, 3) or ctx.input_shape[0] != scale.shape[0]:
        raise ctx.error(f"input {ctx.input_shape} does not have {scale.shape[0]} channels on "
                        "dim 1", field="weight", fix="check num_features")
    prev = ctx.producer()
    if prev is not None and isinstance(prev[1], (ir.Affine, ir.Linear, ir.Conv1d, ir.Conv2d)):
        ctx.replace_producer(fold_batchnorm(prev[1], scale, shift,
                                            f"{type(m).__name__} {ctx.target}"))
        return None
    return ir.ChannelAffine(scale.astype(dtype), shift.astype(dtype))
