"""Elementwise activations shared by torch and heyoka; with Affine/Linear they make FFNNs."""
from __future__ import annotations

import dataclasses

from ..errors import GraphError
from ..fields import Optional, Scalar, param
from ..types import port
from .base import Kind, kind, need_input

#: fn -> default alpha, and what alpha means for it (None: the fn takes no parameter).
ACTIVATIONS: dict[str, tuple[float, str | None]] = {
    "identity": (0.0, None),
    "tanh": (0.0, None),
    "sigmoid": (0.0, None),
    "relu": (0.0, None),
    "leaky_relu": (0.01, "negative slope"),
    "elu": (1.0, "alpha: alpha * (exp(x) - 1) for x <= 0"),
    "softplus": (1.0, "beta: log(1 + exp(beta x)) / beta"),
    "gelu": (0.0, None),  # exact (erf) form
    "silu": (0.0, None),
    "hardtanh": (1.0, "bound: clamp(x, -alpha, alpha)"),
    "exp": (0.0, None),
}


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

    def in_ports(self):
        return {"input": port(None, "real")}

    def out_port(self, inputs):
        p = need_input(inputs)
        return port(p.shape) if p else None
