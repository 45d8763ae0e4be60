"""Small modules for the kinds torch.nn lacks: Activation (every polyir.ir activation by name),
Scale, Threshold, SumPool2d, Delay, and Conv1d / Conv2d with zero padding per side."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..ir import ACTIVATIONS, SOFTPLUS_THRESHOLD
from .logic import Window2d
from .neurons import _as_tensor, spike

__all__ = ["Activation", "Scale", "Threshold", "SumPool2d", "Delay", "Conv1d", "Conv2d",
           "ACTIVATION_FUNCTIONS"]

#: fn name -> f(x, alpha), the torch functional that realises polyir.ir.Activation.
ACTIVATION_FUNCTIONS = {
    "identity": lambda x, a: x,
    "tanh": lambda x, a: torch.tanh(x),
    "sigmoid": lambda x, a: torch.sigmoid(x),
    "relu": lambda x, a: F.relu(x),
    "leaky_relu": lambda x, a: F.leaky_relu(x, a),
    "elu": lambda x, a: F.elu(x, a),
    "softplus": lambda x, a: F.softplus(x, beta=a, threshold=SOFTPLUS_THRESHOLD),
    # the erf form; torch's float32 CPU kernel gives NaN at +inf where the formula gives +inf
    "gelu": lambda x, a: torch.where(x == float("inf"), x, F.gelu(x)),
    "silu": lambda x, a: F.silu(x),
    "hardtanh": lambda x, a: F.hardtanh(x, -a, a),
    "exp": lambda x, a: torch.exp(x),
}


class Activation(nn.Module):
    """y = fn(x) elementwise, mirroring polyir.ir.Activation: `alpha` is fn's one parameter
    (leaky_relu slope, elu alpha, softplus beta, hardtanh bound), default per fn."""

    def __init__(self, fn: str, alpha: float | None = None):
        super().__init__()
        if fn not in ACTIVATIONS:
            raise ValueError(f"unknown activation {fn!r}; use one of {sorted(ACTIVATIONS)}")
        self.fn = fn
        self.alpha = float(ACTIVATIONS[fn][0] if alpha is None else alpha)

    def forward(self, x):
        return ACTIVATION_FUNCTIONS[self.fn](x, self.alpha)

    def extra_repr(self):
        return f"fn={self.fn!r}" + (f", alpha={self.alpha}" if ACTIVATIONS[self.fn][1] else "")


class Scale(nn.Module):
    """y = scale * x elementwise; `scale` is a Parameter of the value shape."""

    def __init__(self, scale):
        super().__init__()
        self.scale = nn.Parameter(_as_tensor(scale))

    def forward(self, x):
        return self.scale * x


class Threshold(nn.Module):
    """z = x > threshold as 0/1 floats (fast-sigmoid surrogate gradient in train mode)."""

    def __init__(self, threshold, surrogate_slope: float = 25.0):
        super().__init__()
        self.threshold = nn.Parameter(_as_tensor(threshold))
        self.surrogate_slope = float(surrogate_slope)

    def forward(self, x):
        return spike(x - self.threshold, self.surrogate_slope, surrogate=self.training)


class SumPool2d(Window2d):
    """Sum over each window of a (B, C, H, W) input, zero padding (an exact sum, not avg * area)."""

    def forward(self, x):
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return self.padded(x).unfold(2, kh, sh).unfold(3, kw, sw).sum((-1, -2))


class Delay(nn.Module):
    """y_t = x_{t - d} per element with d = round(delay / dt) steps (zeros before the start).

    `forward(x, state=None) -> (y, state)`; the state holds the last max(d) inputs, oldest first.
    """

    def __init__(self, delay, dt):
        super().__init__()
        if dt is None or not float(dt) > 0:
            raise ValueError(f"Delay needs a positive time step dt, got {dt!r}")
        self.dt = float(dt)
        delay = np.asarray(_as_tensor(delay).numpy(), dtype=np.float64)
        steps = np.rint(delay / self.dt).astype(np.int64)
        if (steps < 0).any():
            raise ValueError("Delay: delays must be >= 0")
        self.register_buffer("steps", torch.as_tensor(steps))
        self.max_steps = int(steps.max(initial=0))

    def forward(self, x, state=None):
        if self.max_steps == 0:
            return x, None
        if state is None:
            hist = x.new_zeros((self.max_steps,) + tuple(x.shape))
        else:
            hist = state[0]
        stacked = torch.cat([hist, x.unsqueeze(0)])  # (D + 1, B, *S): x_{t-D} .. x_t
        idx = (self.max_steps - self.steps).expand(x.shape).unsqueeze(0)
        y = stacked.gather(0, idx).squeeze(0)
        return y, (stacked[1:],)


class _SidePadded:
    """torch's convolution after explicit zero padding per side (`pads`: ((begin, end), ...) per
    spatial dim, polyir.ir.Conv's convention). The padded zeros take part in the products on
    every torch algorithm, so a NaN / inf weight gives NaN where its window reaches the padding
    (torch's own padding argument does that on some algorithms only)."""

    def __init__(self, *args, pads=(), **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.pads = tuple((int(b), int(e)) for b, e in pads)
        # F.pad takes the last dim first
        self._flat_pads = tuple(p for b, e in reversed(self.pads) for p in (b, e))

    def forward(self, x):
        if any(self._flat_pads):
            x = F.pad(x, self._flat_pads)
        return super().forward(x)

    def extra_repr(self):
        return super().extra_repr() + f", pads={self.pads}"


class Conv1d(_SidePadded, nn.Conv1d):
    """nn.Conv1d with zero padding per side: `pads=((left, right),)`."""


class Conv2d(_SidePadded, nn.Conv2d):
    """nn.Conv2d with zero padding per side: `pads=((top, bottom), (left, right))`."""
