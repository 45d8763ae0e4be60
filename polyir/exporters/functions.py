"""torch functions and Tensor methods -> polyir, one rule per function (the `call_function` /
`call_method` half of the fx exporter; modules go through the handler registry).

`FUNCTIONS` maps a function object (torch.tanh, F.relu, operator.add, ...) and `METHODS` a Tensor
method name ("relu", "view", ...) to `rule(ctx, name, n, values)` (the signature of every polyir
rule table: ctx the exporter, name the fx node's name, n the fx node, values {"input": the example
value of its first argument}), which returns the fx node's value: a traced value
(`ctx.add_node(...)`, `ctx.value_of(...)`), or a marker for shapes / state. A function no
table knows is refused naming it and pointing to docs/export.md.

Shapes are batch-less in polyir: torch's `dim=1` is polyir's axis 0, and a dim that touches the
batch is refused.
"""
from __future__ import annotations

import math
import numbers
import operator
from typing import Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F

from .. import ir
from ..ir.errors import GraphError
from .handlers.torch_nn import (check_gelu, check_softplus_threshold, hardtanh_node, pool_args,
                                torch_dims_to_ir)
from .refusals import EXPORT_DOC
from .state import META, Meta, Pair, StateRef, Value

__all__ = ["FUNCTIONS", "METHODS", "function_rule", "lookup_function", "EXPORT_DOC"]

FUNCTIONS: dict[Callable, Callable] = {}
METHODS: dict[str, Callable] = {}


def function_rule(*targets):
    """Decorator: `rule(ctx, name, n, values)` for each target (a function object, or a Tensor
    method name)."""
    def register(fn):
        for t in targets:
            (METHODS if isinstance(t, str) else FUNCTIONS)[t] = fn
        return fn
    return register


def lookup_function(n: fx.Node) -> Callable | None:
    if n.op == "call_method":
        return METHODS.get(n.target)
    try:
        return FUNCTIONS.get(n.target)
    except TypeError:  # an unhashable target
        return None


def target_name(n) -> str:
    t = n.target
    if isinstance(t, str):
        return t
    mod = getattr(t, "__module__", None) or ""
    return (mod + "." if mod and not mod.startswith("_") else "") + getattr(t, "__name__", repr(t))


class FnCtx:
    """The error helper of ExportContext, for function nodes."""

    def __init__(self, n):
        self.name, self.fx_node = n.name, n.name

    def error(self, message, field=None, fix=None):
        return GraphError(f"fx node {self.fx_node!r}: {message}", node=self.name, field=field,
                          fix=fix)


def arg(n: fx.Node, i: int, name: str, default):
    if len(n.args) > i:
        return n.args[i]
    return n.kwargs.get(name, default)


def _first(exp, n):
    return exp.value_of(n.args[0] if n.args else n.kwargs.get("input"), n)


def _shape(exp, n, which=None) -> tuple:
    """The batch-less shape of fx node `which` (default: n's first argument)."""
    src = which if which is not None else n.args[0]
    return tuple(int(s) for s in exp.example[src.name].shape[1:])


def _node(exp, n, kind, value=None):
    return exp.add_node(exp.unique(n.name), kind, _first(exp, n) if value is None else value, n)


def _is_traced(exp, v) -> bool:
    return isinstance(v, fx.Node) and not isinstance(exp.env.get(v.name), Meta)


def _feature_axis(n, dim, ndim: int, what: str = "dim") -> int:
    """torch dim (counting the batch) -> polyir axis (not counting it), refusing the batch dim."""
    if dim is None:
        raise FnCtx(n).error(f"{what}=None reduces over every dim, the batch included",
                             field="axis", fix=f"pass {what}=1 (or -1): the feature dim")
    d = int(dim) + ndim if int(dim) < 0 else int(dim)
    if not 0 < d < ndim:
        raise FnCtx(n).error(f"{what}={dim} is the batch dim (or out of range) of a {ndim}-D "
                             "value", field="axis",
                             fix="work along feature dims only (dim >= 1, or negative)")
    return d - 1


# --- structure: indexing, shapes, state ----------------------------------------------------------
@function_rule(operator.getitem)
def _getitem(exp, name, n, values):
    base = exp.env.get(n.args[0].name) if isinstance(n.args[0], fx.Node) else None
    key = n.args[1]
    if isinstance(base, Pair) and isinstance(key, int) and -base.size <= key < base.size:
        return base.value if key in (0, -base.size) else base.token
    if isinstance(base, StateRef):
        return StateRef(base.path + (key,))
    if base is META:
        return META
    raise GraphError(f"fx node {n.name!r} indexes a tensor ({n.args[0]}[{key!r}]); polyir graphs "
                     "have no indexing kind", node=n.name, field="type",
                     fix="select features inside a module with a handler (see "
                         f"{EXPORT_DOC} for what exports)")


@function_rule(getattr, "size", "dim")
def _meta(exp, name, n, values):
    return META


@function_rule("contiguous", "clone", "detach", "float")
def _identity(exp, name, n, values):
    return exp.value_of(n.args[0], n)


@function_rule(F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout)
def _dropout(exp, name, n, values):  # the identity in eval mode, which is what polyir exports
    return _first(exp, n)


# --- sums, differences, products, quotients -------------------------------------------------------
def _offset(exp, n, value, src, scale: float, offset: float):
    """scale * value + offset for a number `offset`: one ChannelAffine."""
    shape = _shape(exp, n, src)
    c = shape[0] if shape else 1
    if not shape:
        raise FnCtx(n).error("adds a number to a value without feature dims", field="input",
                             fix="keep a feature dim")
    dt = exp.float_dtype
    return exp.add_node(exp.unique(n.name), ir.ChannelAffine(np.full(c, scale, dt),
                                                             np.full(c, offset, dt)), value, n)


def _operands(n):
    a = n.args[0] if n.args else n.kwargs.get("input")
    b = n.args[1] if len(n.args) > 1 else n.kwargs.get("other")
    return a, b


def _constant_operand(exp, n, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        what = "a tensor constant or parameter" if isinstance(v, fx.Node) else repr(v)
        raise GraphError(f"fx node {n.name!r} ({target_name(n)}) combines a traced value with "
                         f"{what}; polyir takes numbers or traced values here", node=n.name,
                         field="input",
                         fix="use a number, or put the constant in a layer (a bias, a Scale)")
    return float(v)


@function_rule(operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__radd__",
               "__iadd__")
def _add(exp, name, n, values):
    a, b = _operands(n)
    alpha = n.kwargs.get("alpha", 1)
    if alpha != 1:
        raise GraphError(f"fx node {n.name!r}: add with alpha={alpha} has no polyir form",
                         node=n.name, field="alpha", fix="use a + alpha * b")
    if _is_traced(exp, a) and _is_traced(exp, b):
        if _shape(exp, n, a) != _shape(exp, n, b):
            raise _broadcast_error(exp, n, a, b)
        # several edges into one port are summed (NIR's rule): a + b is fan-in
        return Value(exp.value_of(a, n).terms + exp.value_of(b, n).terms)
    x, c = (a, b) if _is_traced(exp, a) else (b, a)
    return _offset(exp, n, exp.value_of(x, n), x, 1.0, _constant_operand(exp, n, c))


@function_rule(operator.sub, operator.isub, torch.sub, "sub", "sub_", "__sub__", "__rsub__",
               "__isub__")
def _sub(exp, name, n, values):
    a, b = _operands(n)
    if n.op == "call_method" and n.target == "__rsub__":
        a, b = b, a
    if n.kwargs.get("alpha", 1) != 1:
        raise GraphError(f"fx node {n.name!r}: sub with alpha has no polyir form", node=n.name,
                         field="alpha", fix="use a - alpha * b")
    if _is_traced(exp, a) and _is_traced(exp, b):
        if _shape(exp, n, a) != _shape(exp, n, b):
            raise _broadcast_error(exp, n, a, b)
        # a - b = a + (-1) b: a Scale and fan-in, both NIR primitives
        neg = exp.add_node(exp.unique(n.name + "_neg"),
                           ir.Scale(np.full(_shape(exp, n, b), -1.0, exp.float_dtype)),
                           exp.value_of(b, n), n)
        return Value(exp.value_of(a, n).terms + neg.terms)
    if _is_traced(exp, a):
        return _offset(exp, n, exp.value_of(a, n), a, 1.0, -_constant_operand(exp, n, b))
    return _offset(exp, n, exp.value_of(b, n), b, -1.0, _constant_operand(exp, n, a))


def _broadcast_error(exp, n, a, b):
    return GraphError(f"fx node {n.name!r} ({target_name(n)}) combines shapes "
                      f"{_shape(exp, n, a)} and {_shape(exp, n, b)} by broadcasting; polyir's "
                      "elementwise kinds take one shape", node=n.name, field="input",
                      fix="expand the smaller operand in the model (x.expand_as(y)) or keep "
                          "equal shapes")


_DIVIDES = (operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "div_",
            "__truediv__", "__itruediv__", "true_divide")


@function_rule(operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__", "__rmul__",
               "__imul__", *_DIVIDES, "__rtruediv__")
def _mul_div(exp, name, n, values):
    a, b = _operands(n)
    divide = n.target in _DIVIDES or n.target == "__rtruediv__"
    if n.op == "call_method" and n.target == "__rtruediv__":
        a, b = b, a
    if divide and n.kwargs.get("rounding_mode") is not None:
        raise GraphError(f"fx node {n.name!r}: division with rounding_mode="
                         f"{n.kwargs['rounding_mode']!r} has no polyir form", node=n.name,
                         field="fn", fix="use true division")
    if _is_traced(exp, a) and _is_traced(exp, b):
        if _shape(exp, n, a) != _shape(exp, n, b):
            raise _broadcast_error(exp, n, a, b)
        binary = ir.Binary("div" if divide else "mul")
        return exp.add_operands(exp.unique(n.name), binary,
                                [exp.value_of(a, n), exp.value_of(b, n)], n)
    if divide and not _is_traced(exp, a):
        raise GraphError(f"fx node {n.name!r} divides the constant {a!r} by a traced value; "
                         "polyir divides two traced values (Binary) or a value by a number",
                         node=n.name, field="input",
                         fix="compute the reciprocal from a traced value: ones / x with ones "
                             "traced, or fold the constant into the next layer")
    x, c = (a, b) if _is_traced(exp, a) else (b, a)
    c = _constant_operand(exp, n, c)
    s = 1.0 / c if divide else c
    return exp.add_node(exp.unique(n.name), ir.Scale(np.full(_shape(exp, n, x), s,
                                                             exp.float_dtype)),
                        exp.value_of(x, n), n)


@function_rule(operator.neg, torch.neg, "neg", "__neg__")
def _neg(exp, name, n, values):
    return _node(exp, n, ir.Scale(np.full(_shape(exp, n), -1.0, exp.float_dtype)))


# --- activations ----------------------------------------------------------------------------------
def _activation(fn, alpha=None):
    def rule(exp, name, n, values):
        a = alpha(n) if alpha is not None else None
        return _node(exp, n, ir.Activation(fn, None if a is None else float(a)))
    return rule


for _fn, _targets in (("tanh", (torch.tanh, F.tanh, "tanh")),
                      ("sigmoid", (torch.sigmoid, F.sigmoid, torch.special.expit, "sigmoid")),
                      ("relu", (torch.relu, F.relu, "relu")),
                      ("silu", (F.silu,)),
                      ("exp", (torch.exp, "exp"))):
    function_rule(*_targets)(_activation(_fn))
function_rule(F.leaky_relu)(_activation("leaky_relu", lambda n: arg(n, 1, "negative_slope", 0.01)))
function_rule(F.elu)(_activation("elu", lambda n: arg(n, 1, "alpha", 1.0)))


@function_rule(F.softplus)
def _softplus(exp, name, n, values):
    check_softplus_threshold(FnCtx(n), arg(n, 2, "threshold", 20.0))
    return _node(exp, n, ir.Activation("softplus", float(arg(n, 1, "beta", 1.0))))


@function_rule(F.gelu)
def _gelu(exp, name, n, values):
    check_gelu(FnCtx(n), arg(n, 1, "approximate", "none"))
    return _node(exp, n, ir.Activation("gelu"))


@function_rule(F.hardtanh)
def _hardtanh(exp, name, n, values):
    return _node(exp, n, hardtanh_node(FnCtx(n), arg(n, 1, "min_val", -1.0),
                                       arg(n, 2, "max_val", 1.0)))


@function_rule(F.relu6)
def _relu6(exp, name, n, values):
    return _node(exp, n, ir.Clamp(0.0, 6.0))


@function_rule(torch.clamp, torch.clip, "clamp", "clip", "clamp_", "clip_")
def _clamp(exp, name, n, values):
    lo, hi = arg(n, 1, "min", None), arg(n, 2, "max", None)
    for b in (lo, hi):
        if b is not None and (isinstance(b, bool) or not isinstance(b, numbers.Real)):
            raise GraphError(f"fx node {n.name!r} clamps to the bound {b!r}; polyir's Clamp "
                             "takes numbers", node=n.name, field="min",
                             fix="use number bounds (or a one-sided clamp)")
    return _node(exp, n, ir.Clamp(-math.inf if lo is None else float(lo),
                                  math.inf if hi is None else float(hi)))


@function_rule(F.softmax, torch.softmax, "softmax", F.log_softmax, torch.log_softmax,
               "log_softmax")
def _softmax(exp, name, n, values):
    name = n.target if isinstance(n.target, str) else n.target.__name__
    functional = n.target in (F.softmax, F.log_softmax)  # (input, dim, _stacklevel, dtype)
    dtype = arg(n, 3, "dtype", None) if functional else arg(n, 2, "dtype", None)
    if dtype is not None:
        raise FnCtx(n).error("softmax with a dtype argument has no polyir form", field="dtype",
                             fix="cast before the softmax")
    axis = _feature_axis(n, arg(n, 1, "dim", None), len(_shape(exp, n)) + 1)
    return _node(exp, n, ir.Softmax(axis, log=name == "log_softmax"))


# --- shape: flatten, reshape, join, pool ----------------------------------------------------------
@function_rule(torch.flatten, "flatten")
def _flatten(exp, name, n, values):
    ndim = exp.example[n.args[0].name].ndim
    start, end = int(arg(n, 1, "start_dim", 0)), int(arg(n, 2, "end_dim", -1))
    return _node(exp, n, torch_dims_to_ir(FnCtx(n), start, end, ndim))


@function_rule(torch.reshape, "view", "reshape")
def _reshape(exp, name, n, values):
    src = n.args[0]
    x, y = exp.example[src.name], exp.example[n.name]
    if y.ndim == 2 and x.ndim > 2 and y.shape[0] == x.shape[0]:
        return _node(exp, n, ir.Flatten(start_dim=0, end_dim=-1))
    if tuple(y.shape) == tuple(x.shape):
        return exp.value_of(src, n)
    raise GraphError(f"fx node {n.name!r} reshapes {tuple(x.shape)} to {tuple(y.shape)}; polyir "
                     "exports only flattening to (batch, -1)", node=n.name, field="shape",
                     fix="use nn.Flatten() or x.flatten(1)")


@function_rule(torch.cat, torch.concat, torch.concatenate, torch.stack)
def _cat(exp, name, n, values):
    xs = n.args[0] if n.args else n.kwargs.get("tensors")
    stack = n.target is torch.stack
    if not isinstance(xs, (list, tuple)) or not xs or not all(_is_traced(exp, x) for x in xs):
        raise GraphError(f"fx node {n.name!r} ({target_name(n)}) joins {xs!r}; polyir joins a "
                         "list of traced values", node=n.name, field="input",
                         fix="pass the values as a list, e.g. torch.cat([a, b], dim=1)")
    ndim = exp.example[xs[0].name].ndim + (1 if stack else 0)
    axis = _feature_axis(n, arg(n, 1, "dim", 0), ndim)
    return exp.add_operands(exp.unique(n.name), ir.Concat(len(xs), axis, stack),
                            [exp.value_of(x, n) for x in xs], n)


@function_rule(torch.mean, "mean")
def _mean(exp, name, n, values):
    dims = arg(n, 1, "dim", None)
    keep = bool(arg(n, 2, "keepdim", False))
    ndim = exp.example[n.args[0].name].ndim
    dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
    spatial = sorted(d + ndim if d < 0 else d for d in dims)
    if ndim != 4 or spatial != [2, 3]:
        raise GraphError(f"fx node {n.name!r} takes a mean over dims {list(dims) or 'all'} of a "
                         f"{ndim}-D value; polyir's mean is the global average over (H, W) of "
                         "(B, C, H, W) values", node=n.name, field="axis",
                         fix="use x.mean((2, 3)) / nn.AdaptiveAvgPool2d(1), or an nn.Linear "
                             "for other means")
    pooled = _node(exp, n, ir.AdaptiveAvgPool2d((1, 1)))
    if keep:
        return pooled
    return exp.add_node(exp.unique(n.name + "_flat"), ir.Flatten(start_dim=0, end_dim=-1),
                        pooled, n)


@function_rule(F.adaptive_avg_pool2d)
def _adaptive_avg_pool(exp, name, n, values):
    size = arg(n, 1, "output_size", None)
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if any(s is None for s in size):
        size = tuple(h if s is None else s for s, h in zip(size, _shape(exp, n)[1:]))
    return _node(exp, n, ir.AdaptiveAvgPool2d(size))


@function_rule(F.max_pool1d, F.max_pool2d, torch.max_pool1d, torch.max_pool2d)
def _max_pool(exp, name, n, values):
    two_d = n.target in (F.max_pool2d, torch.max_pool2d)
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    given = {k: arg(n, i + 1, k, None) for i, k in enumerate(names)}
    kind = pool_args(FnCtx(n), 2 if two_d else 1, **given)
    return _node(exp, n, kind)


@function_rule(F.avg_pool2d)
def _avg_pool(exp, name, n, values):
    k = arg(n, 1, "kernel_size", None)
    s = arg(n, 2, "stride", None) or k
    p = arg(n, 3, "padding", 0)
    if arg(n, 4, "ceil_mode", False) or not arg(n, 5, "count_include_pad", True) or \
            arg(n, 6, "divisor_override", None) is not None:
        raise FnCtx(n).error("avg_pool2d with ceil_mode, count_include_pad=False or "
                             "divisor_override has no polyir form", field="kernel_size",
                             fix="use the defaults")
    return _node(exp, n, ir.AvgPool2d(k, s, p))
