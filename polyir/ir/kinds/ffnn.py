"""Elementwise activations shared by torch and heyoka; with Affine/Linear they make FFNNs.

Each activation has one definition, which every backend (torch, C, CUDA, heyoka) computes:

    identity   x
    tanh       tanh(x)
    sigmoid    1 / (1 + exp(-x))
    relu       0 if x < 0 else x                    (NaN stays NaN)
    leaky_relu x if x > 0 else alpha x
    elu        x if x > 0 else alpha (exp(x) - 1)
    softplus   x if beta x > 20 else log(1 + exp(beta x)) / beta     (alpha = beta; torch's
               threshold: above it the result is x, within 2.1e-9 / beta of the exact function)
    gelu       x / 2 (1 + erf(x / sqrt(2)))         (the erf form, not the tanh approximation)
    silu       x / (1 + exp(-x))
    hardtanh   clamp(x, -alpha, alpha)              (NaN stays NaN)
    exp        exp(x)

NaN and +-inf follow IEEE arithmetic through these formulas: NaN in gives NaN out, and
gelu(+inf) = +inf, gelu(-inf) = silu(-inf) = NaN (-inf times 0), sigmoid(-inf) = 0.
"""
from __future__ import annotations

import dataclasses
import math

from ..errors import GraphError
from ..fields import Optional, Scalar, param
from ..types import port
from .base import Kind, kind, need_input

#: softplus is x where beta * x exceeds this (torch's default threshold), see above
SOFTPLUS_THRESHOLD = 20.0

#: fn -> default alpha, and what alpha means for it (None: the fn takes no parameter).
ACTIVATIONS: dict[str, tuple[float, str | None]] = {
    "identity": (0.0, None),
    "tanh": (0.0, None),
    "sigmoid": (0.0, None),
    "relu": (0.0, None),
    "leaky_relu": (0.01, "negative slope"),
    "elu": (1.0, "alpha: alpha * (exp(x) - 1) for x <= 0"),
    "softplus": (1.0, "beta: log(1 + exp(beta x)) / beta, x above beta x > 20"),
    "gelu": (0.0, None),  # exact (erf) form
    "silu": (0.0, None),
    "hardtanh": (1.0, "bound: clamp(x, -alpha, alpha)"),
    "exp": (0.0, None),
}

#: fn -> (least alpha, whether alpha may equal it): softplus divides by its beta, hardtanh's
#: bound is a magnitude.
ALPHA_LEAST = {"softplus": (0.0, False), "hardtanh": (0.0, True)}


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Activation(Kind):
    """y = fn(x) elementwise; `alpha` is fn's one parameter (see ACTIVATIONS), default per fn."""

    fn: str = param(Scalar(str))
    alpha: float | None = param(Optional(Scalar(float)), default=None)

    def __post_init__(self):
        if self.fn in ACTIVATIONS and self.alpha is None:
            object.__setattr__(self, "alpha", ACTIVATIONS[self.fn][0])
        super().__post_init__()

    def validate(self, name):
        if self.fn not in ACTIVATIONS:
            raise GraphError(f"unknown activation {self.fn!r}", node=name, field="fn",
                             fix=f"use one of {sorted(ACTIVATIONS)}")
        least, equal = ALPHA_LEAST.get(self.fn, (-math.inf, False))
        if not math.isfinite(self.alpha) or self.alpha < least or (self.alpha == least
                                                                    and not equal):
            bound = "" if least == -math.inf else f" {'>=' if equal else '>'} {least}"
            raise GraphError(f"alpha = {self.alpha} is out of range for {self.fn}", node=name,
                             field="alpha", fix=f"use a finite alpha{bound} (default "
                                                f"{ACTIVATIONS[self.fn][0]})")

    def in_ports(self):
        return {"input": port(None, "real")}

    def out_port(self, inputs):
        p = need_input(inputs)
        return port(p.shape) if p else None
