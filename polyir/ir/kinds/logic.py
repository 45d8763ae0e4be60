"""Logic-gate kinds (difflogic / torchlogix): values are bits in eval semantics.

Gate ids follow difflogic's order; GATE_NAMES[i] and the truth table GATE_TABLE[i] (outputs for
(a, b) = (0,0), (0,1), (1,0), (1,1)) are the one definition every direction uses.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import GraphError
from ..fields import Array, Ints, Optional, Scalar, param
from ..types import port
from .base import Kind, kind, need_input
from .nir import pool_out

GATE_NAMES = ("FALSE", "AND", "A AND NOT B", "A", "NOT A AND B", "B", "XOR", "OR", "NOR", "XNOR",
              "NOT B", "A OR NOT B", "NOT A", "NOT A OR B", "NAND", "TRUE")
# GATE_TABLE[g] = (G(0,0), G(0,1), G(1,0), G(1,1)). difflogic's ids are the 4-bit numbers
# G(0,0) G(0,1) G(1,0) G(1,1) read from the high bit down (AND = 0b0001, NOR = 0b1000).
GATE_TABLE = np.array([[(g >> k) & 1 for k in (3, 2, 1, 0)] for g in range(16)], dtype=np.uint8)
# Every relaxed gate is c0 + c1 a + c2 b + c3 ab with these integer coefficients.
GATE_COEFFS = np.array([[t[0], t[2] - t[0], t[1] - t[0], t[3] - t[2] - t[1] + t[0]]
                        for t in GATE_TABLE.astype(np.int64)], dtype=np.int64)


def _check_logits(name, logits, gates, shape):
    if logits is None:
        return
    if logits.shape != shape + (16,):
        raise GraphError(f"logits shape {logits.shape} must be {shape + (16,)}", node=name,
                         field="logits", fix="one row of 16 gate logits per gate")
    if logits.size and not np.array_equal(np.argmax(logits, axis=-1), gates):
        bad = np.argwhere(np.argmax(logits, axis=-1) != gates)[0]
        raise GraphError(f"gate at {tuple(int(i) for i in bad)} is not the argmax of its logits",
                         node=name, field="gate", fix="set gate = logits.argmax(-1)")


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class LogicLayer(Kind):
    """out[j] = G_gate[j](x[a[j]], x[b[j]]) over a 1-D bit input.

    `logits` (out, 16), when present, keep the relaxed trained state (softmax over gates in train
    mode); `gate` is always their argmax.
    """

    a: np.ndarray = param(Array("int", 1))
    b: np.ndarray = param(Array("int", 1))
    gate: np.ndarray = param(Array("gate", 1))
    logits: np.ndarray | None = param(Optional(Array("real", 2)), default=None)

    def validate(self, name):
        if not self.a.shape == self.b.shape == self.gate.shape:
            raise GraphError(f"a {self.a.shape}, b {self.b.shape} and gate {self.gate.shape} "
                             "must have one length", node=name, field="gate",
                             fix="one (a, b, gate) triple per output")
        _check_logits(name, self.logits, self.gate, self.gate.shape)

    def in_ports(self):
        return {"input": port(None, "bit")}

    def out_port(self, inputs):
        return port(self.gate.shape, "bit")

    def check(self, name, inputs):
        p = inputs["input"]
        if len(p.shape) != 1:
            raise GraphError(f"expects a 1-D bit vector, got {p}", node=name, field="a",
                             fix="put a Flatten before it")
        for f in ("a", "b"):
            idx = getattr(self, f)
            if idx.size and (idx.min() < 0 or idx.max() >= p.shape[0]):
                raise GraphError(f"index {int(idx.max() if idx.max() >= p.shape[0] else idx.min())}"
                                 f" is out of range for {p.shape[0]} inputs", node=name, field=f,
                                 fix=f"indices must lie in 0..{p.shape[0] - 1}")


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class LogicTree2d(Kind):
    """Logic convolution (torchlogix LogicConv2d) over a (C, H, W) bit input.

    For each of K kernels and each output position, 2**depth leaves are read from the (zero-padded)
    receptive field at `leaves[k, l] = (channel, dy, dx)`, and reduced by a binary tree of gates:
    `gates[k]` lists level 0 first (gate i combines leaves 2i (as a) and 2i+1 (as b)), then each
    higher level combines the previous level's results pairwise the same way. Output (K, OH, OW)
    with OH = (H + 2 pad - kh) // stride + 1.
    """

    leaves: np.ndarray = param(Array("int", 3))
    gates: np.ndarray = param(Array("gate", 2))
    kernel_size: tuple = param(Ints(2))
    stride: tuple = param(Ints(2), default=(1, 1))
    padding: tuple = param(Ints(2), default=(0, 0))
    logits: np.ndarray | None = param(Optional(Array("real", 3)), default=None)

    @property
    def depth(self) -> int:
        return int(self.leaves.shape[1]).bit_length() - 1

    def validate(self, name):
        k, n_leaves, three = self.leaves.shape
        if three != 3 or n_leaves < 2 or n_leaves & (n_leaves - 1):
            raise GraphError(f"leaves shape {self.leaves.shape} must be (K, 2**depth, 3)",
                             node=name, field="leaves", fix="one (channel, dy, dx) per leaf")
        if self.gates.shape != (k, n_leaves - 1):
            raise GraphError(f"gates shape {self.gates.shape} must be {(k, n_leaves - 1)}",
                             node=name, field="gates", fix="2**depth - 1 gates per kernel")
        for axis, (lim, what) in enumerate(((None, "channel"), (self.kernel_size[0], "dy"),
                                             (self.kernel_size[1], "dx"))):
            col = self.leaves[..., axis]
            if col.size and (col.min() < 0 or (lim is not None and col.max() >= lim)):
                raise GraphError(f"leaf {what} out of range", node=name, field="leaves",
                                 fix=f"{what} must lie in 0..{'C-1' if lim is None else lim - 1}")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise GraphError("kernel_size and stride must be >= 1, padding >= 0", node=name,
                             field="kernel_size", fix="fix the window")
        _check_logits(name, self.logits, self.gates, self.gates.shape)

    def in_ports(self):
        return {"input": port(None, "bit")}

    def out_port(self, inputs):
        p = need_input(inputs)
        if p is None:
            return None
        out = pool_out(self, inputs)
        return port((self.leaves.shape[0],) + out.shape[1:], "bit")

    def check(self, name, inputs):
        p = inputs["input"]
        if len(p.shape) != 3:
            raise GraphError(f"expects a (C, H, W) bit input, got {p}", node=name, field="leaves",
                             fix="feed it 3-D bits")
        if self.leaves[..., 0].max(initial=0) >= p.shape[0]:
            raise GraphError(f"leaf channel {self.leaves[..., 0].max()} is out of range for "
                             f"{p.shape[0]} channels", node=name, field="leaves",
                             fix=f"channels must lie in 0..{p.shape[0] - 1}")


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class OrPool2d(Kind):
    """OR (max) of the bits in each window of a (C, H, W) bit input; padding reads 0."""

    kernel_size: tuple = param(Ints(2))
    stride: tuple = param(Ints(2))
    padding: tuple = param(Ints(2), default=(0, 0))

    def validate(self, name):
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise GraphError("kernel_size and stride must be >= 1, padding >= 0", node=name,
                             field="kernel_size", fix="fix the window")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise GraphError(f"padding {self.padding} exceeds half the kernel {self.kernel_size}",
                             node=name, field="padding", fix="use padding <= kernel_size // 2")

    def in_ports(self):
        return {"input": port(None, "bit")}

    def out_port(self, inputs):
        out = pool_out(self, inputs)
        return None if out is None else port(out.shape, "bit")


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Binarize(Kind):
    """Thermometer encoding: bit = x > t, strictly.

    thresholds: (T,) for every element, (S[axis], T) per index along `axis`, or (*S, T) per
    element. The T bits of each element are folded into `axis`: the output has shape S with
    S[axis] * T there, element i of that axis giving bits i*T .. i*T + T-1 (torchlogix's layout).
    """

    thresholds: np.ndarray = param(Array("real"))
    axis: int = param(Scalar(int), default=0)

    def validate(self, name):
        if self.thresholds.ndim < 1 or self.thresholds.shape[-1] < 1:
            raise GraphError("needs at least one threshold", node=name, field="thresholds",
                             fix="pass a (T,) array")

    def in_ports(self):
        return {"input": port(None, "real")}

    def _axis(self, shape):
        ax = self.axis + len(shape) if self.axis < 0 else self.axis
        if not 0 <= ax < len(shape):
            raise GraphError(f"axis {self.axis} out of range for input shape {shape}",
                             field="axis", fix="count dims without the batch dim")
        return ax

    def out_port(self, inputs):
        p = need_input(inputs)
        if p is None:
            return None
        ax = self._axis(p.shape)
        t = self.thresholds.shape[-1]
        return port(p.shape[:ax] + (p.shape[ax] * t,) + p.shape[ax + 1:], "bit")

    def check(self, name, inputs):
        shape = inputs["input"].shape
        ax = self._axis(shape)
        th = self.thresholds.shape
        if not (len(th) == 1 or th[:-1] == (shape[ax],) or th[:-1] == shape):
            raise GraphError(f"thresholds {th} fit neither (T,), ({shape[ax]}, T) nor "
                             f"{shape + ('T',)} for input {shape}", node=name, field="thresholds",
                             fix="shape thresholds per element, per axis index or shared")


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class GroupSum(Kind):
    """y_c = (sum of the bits in group c + beta) / tau, over k equal contiguous groups."""

    k: int = param(Scalar(int))
    tau: float = param(Scalar(float), default=1.0)
    beta: float = param(Scalar(float), default=0.0)

    def validate(self, name):
        if self.k < 1:
            raise GraphError(f"k = {self.k} must be >= 1", node=name, field="k", fix="k >= 1")
        if not (np.isfinite(self.tau) and self.tau > 0):
            raise GraphError(f"tau = {self.tau} must be a finite number > 0", node=name,
                             field="tau", fix="tau > 0 (difflogic's temperature, e.g. 1.0)")
        if not np.isfinite(self.beta):
            raise GraphError(f"beta = {self.beta} must be finite", node=name, field="beta",
                             fix="beta is a finite offset (default 0.0)")

    def in_ports(self):
        return {"input": port(None, "bit")}

    def out_port(self, inputs):
        return port((self.k,))

    def check(self, name, inputs):
        p = inputs["input"]
        if len(p.shape) != 1 or p.shape[0] % self.k:
            raise GraphError(f"input {p} is not a 1-D vector divisible into k={self.k} groups",
                             node=name, field="k", fix="choose k dividing the input width")
