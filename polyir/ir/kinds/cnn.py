"""Everyday CNN / MLP layers that NIR has no primitive for: per-channel affine (a BatchNorm that
follows no linear layer), max pooling on reals, adaptive average pooling, concatenation,
elementwise products and quotients, clamp, softmax / log-softmax and LayerNorm.

Shapes never include the batch dim: a torch value (B, C, H, W) is a port of shape (C, H, W), so
torch's `dim=1` is polyir's axis 0. Multi-input kinds (Concat, Binary) take their operands on
ports `input_0`, `input_1`, ... in order.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import GraphError
from ..fields import Array, Ints, Optional, Scalar, param
from ..types import port
from .base import Kind, kind, need_input


def operand_ports(n: int) -> list[str]:
    """The port names of an n-operand kind, in operand order."""
    return [f"input_{i}" for i in range(n)]


def _axis(name, field, axis, ndim):
    a = axis + ndim if axis < 0 else axis
    if not 0 <= a < ndim:
        raise GraphError(f"axis {axis} is out of range for a {ndim}-D value (batch dim not "
                         "counted)", node=name, field=field,
                         fix="count dims without the batch dim (torch's dim=1 is axis 0)")
    return a


class _RealIn(Kind):
    """A kind with one real input port of any shape."""

    def in_ports(self):
        return {"input": port(None, "real")}


class _Elementwise(_RealIn):
    """A kind whose output has its input's shape."""

    def out_port(self, inputs):
        p = need_input(inputs)
        return port(p.shape) if p else None


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class ChannelAffine(_Elementwise):
    """y[c, ...] = weight[c] * x[c, ...] + bias[c]: one scale and offset per channel (axis 0 of
    the batch-less value; the feature of a 1-D value). An eval-mode BatchNorm that follows no
    Conv/Affine exports as this (weight = gamma / sqrt(var + eps), bias = beta - mean * weight)."""

    weight: np.ndarray = param(Array("real", 1))
    bias: np.ndarray = param(Array("real", 1))

    def validate(self, name):
        if self.bias.shape != self.weight.shape:
            raise GraphError(f"bias shape {self.bias.shape} differs from weight "
                             f"{self.weight.shape}", node=name, field="bias",
                             fix="one weight and one bias per channel")


    def check(self, name, inputs):
        shape = inputs["input"].shape
        if not shape or shape[0] != self.weight.shape[0]:
            raise GraphError(f"input {inputs['input']} does not have {self.weight.shape[0]} "
                             "channels on axis 0", node=name, field="weight",
                             fix="give one weight per channel of the input")


def _pool_geometry(name, kernel, stride, padding):
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise GraphError(f"kernel {kernel}, stride {stride}, padding {padding} must be positive "
                         "(padding >= 0)", node=name, field="kernel_size", fix="fix the window")
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise GraphError(f"padding {padding} exceeds half the kernel {kernel}: a window could lie "
                         "entirely in the padding", node=name, field="padding",
                         fix="use padding <= kernel_size // 2 (torch's rule)")


class _MaxPool(_RealIn):
    """Max over each window; padding never wins (it counts as -inf, as in torch)."""

    spatial = 0

    def validate(self, name):
        _pool_geometry(name, self.kernel_size, self.stride, self.padding)

    def out_port(self, inputs):
        p = need_input(inputs)
        if p is None:
            return None
        if len(p.shape) != self.spatial + 1:
            raise GraphError(f"expects a (C, {'H, W' if self.spatial == 2 else 'L'}) input, got "
                             f"{p}", field="kernel_size",
                             fix=f"pool {self.spatial + 1}-D (channel, spatial) values")
        out = tuple((n + 2 * pad - k) // s + 1 for n, k, s, pad in
                    zip(p.shape[1:], self.kernel_size, self.stride, self.padding))
        if any(o <= 0 for o in out):
            raise GraphError(f"input {p} is too small for kernel {self.kernel_size}",
                             field="kernel_size", fix="use a smaller window")
        return port((p.shape[0],) + out)


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class MaxPool1d(_MaxPool):
    """y[c, i] = max over x[c, i*stride - padding + k], k < kernel_size (in range)."""

    kernel_size: tuple = param(Ints(1))
    stride: tuple = param(Ints(1))
    padding: tuple = param(Ints(1), default=(0,))
    spatial = 1


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class MaxPool2d(_MaxPool):
    """y[c, i, j] = max over the (kh, kw) window at (i*sh - ph, j*sw - pw) (in range)."""

    kernel_size: tuple = param(Ints(2))
    stride: tuple = param(Ints(2))
    padding: tuple = param(Ints(2), default=(0, 0))
    spatial = 2


def adaptive_windows(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling windows: [floor(i n_in / n_out), ceil((i + 1) n_in / n_out))."""
    return [((i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)) for i in range(n_out)]


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class AdaptiveAvgPool2d(_RealIn):
    """Mean over torch's adaptive windows (see `adaptive_windows`) giving (C, *output_size);
    output_size (1, 1) is the global mean."""

    output_size: tuple = param(Ints(2))

    def validate(self, name):
        if min(self.output_size) < 1:
            raise GraphError(f"output_size {self.output_size} must be positive", node=name,
                             field="output_size", fix="use sizes >= 1")

    def out_port(self, inputs):
        p = need_input(inputs)
        if p is None:
            return None
        if len(p.shape) != 3:
            raise GraphError(f"expects a (C, H, W) input, got {p}", field="output_size",
                             fix="pool 3-D (channel, height, width) values")
        return port((p.shape[0],) + tuple(self.output_size))


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Concat(Kind):
    """Join `n_inputs` values along `axis` (torch.cat), or, with stack=True, along a new axis
    inserted at `axis` (torch.stack). Operands arrive on ports input_0 .. input_{n-1}."""

    n_inputs: int = param(Scalar(int))
    axis: int = param(Scalar(int), default=0)
    stack: bool = param(Scalar(bool), default=False)

    def validate(self, name):
        if self.n_inputs < 1:
            raise GraphError(f"n_inputs={self.n_inputs}", node=name, field="n_inputs",
                             fix="join at least one value")

    def in_ports(self):
        return {p: port(None, "real") for p in operand_ports(self.n_inputs)}

    def out_port(self, inputs):
        ps = [need_input(inputs, p) for p in operand_ports(self.n_inputs)]
        if any(p is None for p in ps):
            return None
        shapes = [p.shape for p in ps]
        ndim = len(shapes[0]) + (1 if self.stack else 0)
        a = _axis(None, "axis", self.axis, ndim)
        if self.stack:
            if len(set(shapes)) != 1:
                raise GraphError(f"stacked operands differ in shape {shapes}", field="input",
                                 fix="stack values of one shape")
            return port(shapes[0][:a] + (len(shapes),) + shapes[0][a:])
        rest = {s[:a] + s[a + 1:] for s in shapes}
        if len({len(s) for s in shapes}) != 1 or len(rest) != 1:
            raise GraphError(f"operands {shapes} differ outside axis {self.axis}", field="input",
                             fix="join values that agree on every other dim")
        return port(shapes[0][:a] + (sum(s[a] for s in shapes),) + shapes[0][a + 1:])


BINARY_FNS = {"mul": "a * b", "div": "a / b"}


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Binary(Kind):
    """y = a fn b elementwise for two values of one shape: fn 'mul' (a * b) or 'div' (a / b);
    a on port input_0, b on input_1. (a - b exports as a + Scale(-1) b, a NIR-readable form.)"""

    fn: str = param(Scalar(str))

    def validate(self, name):
        if self.fn not in BINARY_FNS:
            raise GraphError(f"unknown elementwise function {self.fn!r}", node=name, field="fn",
                             fix=f"use one of {sorted(BINARY_FNS)}")

    def in_ports(self):
        return {p: port(None, "real") for p in operand_ports(2)}

    def out_port(self, inputs):
        a, b = (need_input(inputs, p) for p in operand_ports(2))
        if a is None or b is None:
            return None
        if a.shape != b.shape:
            raise GraphError(f"operands have shapes {a.shape} and {b.shape}", field="input",
                             fix="give both operands one shape (expand the smaller one first)")
        return port(a.shape)


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Clamp(_Elementwise):
    """y = min(max(x, min), max) elementwise; a bound may be -inf / inf (one-sided). ReLU6 is
    Clamp(0, 6); Hardtanh(lo, hi) is Clamp(lo, hi)."""

    min: float = param(Scalar(float), default=-math.inf)
    max: float = param(Scalar(float), default=math.inf)

    def validate(self, name):
        if math.isnan(self.min) or math.isnan(self.max) or self.min > self.max:
            raise GraphError(f"bounds ({self.min}, {self.max}) are not ordered", node=name,
                             field="min", fix="use min <= max")



@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Softmax(_RealIn):
    """y = exp(x - max) / sum exp(x - max) along `axis` (batch dim not counted); with log=True,
    y = x - max - log(sum exp(x - max)) (log-softmax)."""

    axis: int = param(Scalar(int), default=-1)
    log: bool = param(Scalar(bool), default=False)

    def out_port(self, inputs):
        p = need_input(inputs)
        if p is None:
            return None
        _axis(None, "axis", self.axis, len(p.shape))
        return port(p.shape)


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class LayerNorm(_RealIn):
    """Over the trailing dims `normalized_shape`: y = (x - mean) / sqrt(var + eps) * weight +
    bias, var the biased variance (torch's); weight / bias (of normalized_shape) optional."""

    normalized_shape: tuple = param(Ints())
    weight: np.ndarray | None = param(Optional(Array("real")), default=None)
    bias: np.ndarray | None = param(Optional(Array("real")), default=None)
    eps: float = param(Scalar(float), default=1e-5)

    def validate(self, name):
        for field in ("weight", "bias"):
            v = getattr(self, field)
            if v is not None and v.shape != tuple(self.normalized_shape):
                raise GraphError(f"{field} shape {v.shape} differs from normalized_shape "
                                 f"{self.normalized_shape}", node=name, field=field,
                                 fix="give weight and bias the normalized shape")
        if not self.eps >= 0:
            raise GraphError(f"eps={self.eps} must be >= 0", node=name, field="eps",
                             fix="use torch's default 1e-5")

    def out_port(self, inputs):
        p = need_input(inputs)
        if p is None:
            return None
        n = len(self.normalized_shape)
        if n == 0 or p.shape[len(p.shape) - n:] != tuple(self.normalized_shape) or n > len(p.shape):
            raise GraphError(f"input {p} does not end in normalized_shape "
                             f"{self.normalized_shape}", field="normalized_shape",
                             fix="normalise over the trailing dims of the value")
        return port(p.shape)


CNN_KINDS = ("ChannelAffine", "MaxPool1d", "MaxPool2d", "AdaptiveAvgPool2d", "Concat", "Binary",
             "Clamp", "Softmax", "LayerNorm")
