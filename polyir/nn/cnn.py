"""Torch layers for the everyday CNN / MLP kinds that torch.nn has no one-to-one module for:
ChannelAffine, Concat, Binary (elementwise product / quotient of two values) and Clamp. (MaxPool,
AdaptiveAvgPool2d, Softmax and LayerNorm are torch.nn's own modules.)"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ir import BINARY_FNS

__all__ = ["ChannelAffine", "Concat", "Binary", "Clamp"]


class ChannelAffine(nn.Module):
    """y[:, c, ...] = weight[c] * x[:, c, ...] + bias[c] (per channel, dim 1 of the batch)."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.as_tensor(weight).clone())
        self.bias = nn.Parameter(torch.as_tensor(bias).clone())

    def forward(self, x):
        view = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.weight.reshape(view) + self.bias.reshape(view)

    def extra_repr(self):
        return f"channels={self.weight.shape[0]}"


class Concat(nn.Module):
    """torch.cat(xs, dim=axis + 1), or torch.stack with stack=True (axis without the batch dim).
    Called with the operands as separate arguments."""

    def __init__(self, axis: int = 0, stack: bool = False):
        super().__init__()
        self.axis, self.stack = int(axis), bool(stack)

    def forward(self, *xs):
        dim = self.axis + 1 if self.axis >= 0 else self.axis
        return torch.stack(xs, dim) if self.stack else torch.cat(xs, dim)

    def extra_repr(self):
        return f"axis={self.axis}, stack={self.stack}"


class Binary(nn.Module):
    """a * b (fn='mul') or a / b (fn='div') elementwise."""

    def __init__(self, fn: str):
        super().__init__()
        if fn not in BINARY_FNS:
            raise ValueError(f"unknown elementwise function {fn!r}; use one of "
                             f"{sorted(BINARY_FNS)}")
        self.fn = fn

    def forward(self, a, b):
        return a * b if self.fn == "mul" else a / b

    def extra_repr(self):
        return f"fn={self.fn!r}"


class Clamp(nn.Module):
    """torch.clamp(x, min, max); an infinite bound is no bound."""

    def __init__(self, min: float = -math.inf, max: float = math.inf):  # noqa: A002 - torch's names
        super().__init__()
        self.min, self.max = float(min), float(max)

    def forward(self, x):
        lo = None if self.min == -math.inf else self.min
        hi = None if self.max == math.inf else self.max
        return torch.clamp(x, lo, hi) if lo is not None or hi is not None else x

    def extra_repr(self):
        return f"min={self.min}, max={self.max}"
