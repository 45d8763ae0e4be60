"""Export handlers for torch.nn: Linear, Conv1d/2d, Flatten, the activations polyir shares with
heyoka, AvgPool2d, MaxPool2d (on bits only: OR), Identity and Dropout (skipped)."""
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
    bias = ctx.array(m.bias) if m.bias is not None else np.zeros(m.out_channels,
                                                                   ctx.array(m.weight).dtype)
    return ctx.array(m.weight), bias


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
                        "polyir's softplus follows (linear above beta*x > 20)", field="threshold",
                        fix="use the default threshold=20")


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
    if float(lo) != -float(hi) or float(hi) <= 0:
        raise ctx.error(f"hardtanh bounds ({lo}, {hi}) are not symmetric around 0", field="alpha",
                        fix="polyir's hardtanh clamps to (-alpha, alpha): use min_val = -max_val")
    return ir.Activation("hardtanh", float(hi))


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


@handler(nn.MaxPool2d, builtin=True)
def _maxpool(ctx, name, m, values):
    if ctx.input_elem != "bit":
        raise ctx.error("MaxPool2d on real values has no polyir kind (only OR pooling on bits)",
                        field="type", fix="use AvgPool2d, or binarize before pooling (on bits "
                                          "MaxPool2d becomes OrPool2d)")
    if _pair(m.dilation) != (1, 1) or m.ceil_mode or m.return_indices:
        raise ctx.error("MaxPool2d with dilation, ceil_mode or return_indices has no polyir "
                        "form", field="kernel_size", fix="use a plain window")
    k = _pair(m.kernel_size)
    return ir.OrPool2d(k, _pair(m.stride if m.stride is not None else k), _pair(m.padding))
