"""NIR's primitives, with NIR's field names and continuous-time meaning.

Shapes never include batch or time dims. Field names are the dataset names NIR writes, so that a
file of these kinds is a NIR file.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import GraphError
from ..fields import Array, Ints, Optional, Scalar, param
from ..types import ELEMS, Port, port
from .base import Kind, kind, need_input

real = Array("real")


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Input(Kind):
    """A graph input of the given shape. `elem` 'bit' declares 0/1 values that may feed logic
    kinds directly; 'relation' declares facts of `arity` constants with values of `shape`.

    The bit rule, the same on every backend: in eval mode a bit Input takes exactly 0 or 1 (any
    numeric dtype); any other value (0.5, 2, NaN) is refused with `non_bit_error`, because a
    hard backend could only guess (x != 0? x > 0.5?) while the relaxed torch layers would compute
    something else again. Train-mode torch (and heyoka in mode='train') read values in [0, 1] as
    relaxed bits by design.
    """

    shape: tuple = param(Ints())
    elem: str = param(Scalar(str), default="real")
    arity: int | None = param(Optional(Scalar(int)), default=None)
    omit_when_default = ("elem",)  # a plain real Input stays a NIR Input

    def validate(self, name):
        if self.elem not in ELEMS:
            raise GraphError(f"unknown element kind {self.elem!r}", node=name, field="elem",
                             fix=f"use one of {ELEMS}")
        if (self.elem == "relation") != (self.arity is not None):
            raise GraphError("arity is given exactly when elem is 'relation'", node=name,
                             field="arity", fix="set both or neither")
        if any(d < 1 for d in self.shape):
            raise GraphError(f"shape {self.shape} has a dimension below 1", node=name,
                             field="shape", fix="every dimension of an Input is >= 1")

    def in_ports(self):
        return {}

    def out_port(self, inputs):
        return port(self.shape, self.elem, self.arity)

    @staticmethod
    def non_bit_error(name: str, value) -> GraphError:
        """What every backend raises when a bit Input gets a value other than 0 or 1."""
        return GraphError(f"bit input got the value {value!r}; a bit Input takes only 0 or 1",
                          node=name, field="elem",
                          fix="threshold the data first (x > 0.5), feed real values through a "
                              "Binarize node (declare the Input real), or use train mode for "
                              "relaxed values in [0, 1]")


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Output(Kind):
    """A graph output; its shape must equal what feeds it."""

    shape: tuple = param(Ints())

    def in_ports(self):
        return {"input": port(self.shape, None)}

    def out_port(self, inputs):
        p = inputs.get("input")
        return port(self.shape, p.elem if p else None, p.arity if p else None)


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Affine(Kind):
    """y = W x + b, W of shape (out, in)."""

    weight: np.ndarray = param(Array("real", 2))
    bias: np.ndarray = param(Array("real", 1))

    def validate(self, name):
        if self.bias.shape != self.weight.shape[:1]:
            raise GraphError(f"bias shape {self.bias.shape} does not match weight {self.weight.shape}",
                             node=name, field="bias", fix="bias must have shape (out,)")

    def in_ports(self):
        return {"input": port(self.weight.shape[1:])}

    def out_port(self, inputs):
        return port(self.weight.shape[:1])


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Linear(Kind):
    """y = W x, W of shape (out, in)."""

    weight: np.ndarray = param(Array("real", 2))

    def in_ports(self):
        return {"input": port(self.weight.shape[1:])}

    def out_port(self, inputs):
        return port(self.weight.shape[:1])


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Scale(Kind):
    """y = s * x elementwise."""

    scale: np.ndarray = param(real)

    def out_port(self, inputs):
        return port(self.scale.shape)


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Threshold(Kind):
    """z = 1 if x > threshold else 0 (Heaviside), values stay real."""

    threshold: np.ndarray = param(real)

    def out_port(self, inputs):
        return port(self.threshold.shape)


def _dims(name, field, dim, ndim):
    d = dim + ndim if dim < 0 else dim
    if not 0 <= d < ndim:
        raise GraphError(f"dim {dim} is out of range for a {ndim}-D input", node=name, field=field,
                         fix="count dims without the batch dim")
    return d


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Flatten(Kind):
    """Merge dims start_dim..end_dim (inclusive) of the batch-less input, as NIR counts them.
    (torch's nn.Flatten counts the batch dim: its start_dim=1 is NIR's start_dim=0.)"""

    input_type: tuple | None = param(Optional(Ints()), default=None)
    start_dim: int = param(Scalar(int), default=1)
    end_dim: int = param(Scalar(int), default=-1)

    def in_ports(self):
        return {"input": port(self.input_type, None)}

    def out_port(self, inputs):
        p = need_input(inputs)
        shape = self.input_type if self.input_type is not None else (p.shape if p else None)
        if shape is None:
            return None
        s = _dims(None, "start_dim", self.start_dim, len(shape))
        e = _dims(None, "end_dim", self.end_dim, len(shape))
        if e < s:
            raise GraphError(f"end_dim {self.end_dim} is before start_dim {self.start_dim}",
                             field="end_dim", fix="use end_dim >= start_dim")
        merged = int(np.prod(shape[s:e + 1], dtype=np.int64))
        return port(shape[:s] + (merged,) + shape[e + 1:], p.elem if p else None)


def check_padding(spatial_in, pads) -> None:
    """A window op's padding may not exceed its input (every output would read only padding,
    and the op's size would grow with the padding alone). `pads`: a number or (begin, end)
    per spatial dim."""
    for n, p in zip(spatial_in, pads):
        if max(p if isinstance(p, tuple) else (p,)) > n:
            raise GraphError(f"padding {tuple(pads)} exceeds the input {tuple(spatial_in)}",
                             field="padding", fix="use a padding no larger than the input "
                                                  "(usually at most kernel_size // 2)")


def conv_out(size, kernel, stride, begin, end, dilation):
    return (size + begin + end - dilation * (kernel - 1) - 1) // stride + 1


def _conv_ports(self, spatial_in):
    c_in = self.weight.shape[1] * self.groups
    if spatial_in is None:
        return None
    strides = self.stride if isinstance(self.stride, tuple) else (self.stride,)
    dils = self.dilation if isinstance(self.dilation, tuple) else (self.dilation,)
    check_padding(spatial_in, self.pads)
    out = tuple(conv_out(n, k, s, b, e, d) for n, k, s, (b, e), d in
                zip(spatial_in, self.weight.shape[2:], strides, self.pads, dils))
    if any(o <= 0 for o in out):
        raise GraphError(f"input {spatial_in} is too small for kernel {self.weight.shape[2:]}",
                         field="weight", fix="use a larger input or a smaller kernel")
    return port((c_in,) + tuple(spatial_in)), port((self.weight.shape[0],) + out)


class _Conv(Kind):
    """Zero padding is stored per side: `padding` holds the begin sides (top / left; NIR's
    field, symmetric when `padding_end` is None), `padding_end` the end sides (bottom / right)
    when they differ. The padded zeros take part in the products, so a NaN / inf weight makes
    every output whose window reaches into the padding NaN (0 * inf), on every backend.
    'valid' and 'same' are resolved when the node is built; 'same' follows torch: stride 1, total
    dilation * (kernel - 1) per dim, the odd one at the end. A file never holds a string."""

    omit_when_default = ("padding_end",)  # symmetric padding: NIR's layout exactly

    @property
    def pads(self) -> tuple:
        """((begin, end), ...) per spatial dim."""
        begin = self.padding if isinstance(self.padding, tuple) else (self.padding,)
        end = begin if self.padding_end is None else (
            self.padding_end if isinstance(self.padding_end, tuple) else (self.padding_end,))
        return tuple(zip(begin, end))

    def _resolve_padding(self):
        nd = self.weight.ndim - 2
        as_t = (lambda v: tuple(v) if isinstance(v, tuple) else (v,) * nd)
        pad, end = self.padding, self.padding_end
        if isinstance(pad, str):
            if end is not None:
                raise GraphError(f"padding={pad!r} with padding_end={end}", field="padding_end",
                                 fix="give padding_end only with explicit padding numbers")
            if pad == "valid":
                pad = (0,) * nd
            else:
                if any(s != 1 for s in as_t(self.stride)):
                    raise GraphError(f"padding='same' with stride {self.stride}: torch defines "
                                     "'same' for stride 1 only, and other libraries split it "
                                     "differently", field="padding",
                                     fix="give the padding per side: padding=<begin sides>, "
                                         "padding_end=<end sides>")
                total = [d * (k - 1) for k, d in zip(self.weight.shape[2:], as_t(self.dilation))]
                pad, end = tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)
        pad = as_t(pad)
        end = pad if end is None else as_t(end)
        if min(pad + end, default=0) < 0:
            raise GraphError(f"padding {pad} / padding_end {end} must be >= 0", field="padding",
                             fix="use zero or positive padding")
        one = (lambda v: v[0]) if isinstance(self, Conv1d) else (lambda v: v)
        object.__setattr__(self, "padding", one(pad))
        object.__setattr__(self, "padding_end", None if end == pad else one(end))

    def validate(self, name):
        if self.bias is not None and self.bias.shape != self.weight.shape[:1]:
            raise GraphError(f"bias shape {self.bias.shape} does not match {self.weight.shape[0]} "
                             "output channels", node=name, field="bias", fix="bias is (C_out,)")
        if self.groups < 1 or self.weight.shape[0] % self.groups:
            raise GraphError(f"groups={self.groups} does not divide {self.weight.shape[0]} "
                             "output channels", node=name, field="groups", fix="fix groups")
        for field in ("stride", "dilation", "padding", "input_shape"):
            value = getattr(self, field)
            if value is None or isinstance(value, str):
                continue
            least = 0 if field == "padding" else 1
            if min(value if isinstance(value, tuple) else (value,)) < least:
                raise GraphError(f"{field} {value} must be >= {least}", node=name, field=field,
                                 fix=f"every {field} entry is an integer >= {least}")

    def _spatial(self, inputs):
        if self.input_shape is not None:
            return tuple(self.input_shape)
        p = need_input(inputs)
        return p.shape[1:] if p else None

    def in_ports(self):
        if self.input_shape is None:
            return {"input": port(None)}
        return {"input": _conv_ports(self, tuple(self.input_shape))[0]}

    def out_port(self, inputs):
        sp = self._spatial(inputs)
        return None if sp is None else _conv_ports(self, sp)[1]

    def file_inferred(self, inputs):
        # NIR's Conv always has a bias: a bias-free conv is written with zeros marked inferred,
        # so that nir.read opens the file and polyir.load gives back bias=None.
        out = {} if self.bias is not None else {"bias": np.zeros(self.weight.shape[0],
                                                                 self.weight.dtype)}
        p = inputs.get("input")
        if self.input_shape is not None or p is None or p.shape is None:
            return out
        spatial = tuple(p.shape[1:])
        out["input_shape"] = spatial[0] if isinstance(self, Conv1d) else spatial
        return out

    def check(self, name, inputs):
        p = inputs["input"]
        want = self.weight.shape[1] * self.groups
        if p.shape is None or len(p.shape) != self.weight.ndim - 1 or p.shape[0] != want:
            raise GraphError(f"input {p} does not fit: expected {want} channels and "
                             f"{self.weight.ndim - 2} spatial dim(s)", node=name, field="weight",
                             fix="check the channel count of the layer before")


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Conv1d(_Conv):
    """1-D convolution; weight (C_out, C_in/groups, K). input_shape is the spatial length; bias
    (C_out,) or None (no bias); padding / padding_end: the left / right zero padding (see
    _Conv)."""

    input_shape: int | None = param(Optional(Scalar(int)))
    weight: np.ndarray = param(Array("real", 3))
    stride: int = param(Scalar(int), default=1)
    padding: int | str = param(Ints(1, ("same", "valid")), default=0)
    dilation: int = param(Scalar(int), default=1)
    groups: int = param(Scalar(int), default=1)
    bias: np.ndarray | None = param(Optional(real), default=None)
    padding_end: int | None = param(Optional(Scalar(int)), default=None)

    def __post_init__(self):
        if isinstance(self.padding, tuple) and len(self.padding) == 1:
            object.__setattr__(self, "padding", self.padding[0])
        super().__post_init__()
        if isinstance(self.padding, tuple):
            object.__setattr__(self, "padding", self.padding[0])
        self._resolve_padding()

    def _spatial(self, inputs):
        if self.input_shape is not None:
            return (self.input_shape,)
        return super()._spatial(inputs)

    def in_ports(self):
        if self.input_shape is None:
            return {"input": port(None)}
        return {"input": _conv_ports(self, (self.input_shape,))[0]}


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Conv2d(_Conv):
    """2-D convolution; weight (C_out, C_in/groups, KH, KW). input_shape is (H, W) or None; bias
    (C_out,) or None (no bias); padding (top, left) and padding_end (bottom, right): zero
    padding per side (see _Conv)."""

    input_shape: tuple | None = param(Optional(Ints(2)))
    weight: np.ndarray = param(Array("real", 4))
    stride: tuple = param(Ints(2), default=(1, 1))
    padding: tuple | str = param(Ints(2, ("same", "valid")), default=(0, 0))
    dilation: tuple = param(Ints(2), default=(1, 1))
    groups: int = param(Scalar(int), default=1)
    bias: np.ndarray | None = param(Optional(real), default=None)
    padding_end: tuple | None = param(Optional(Ints(2)), default=None)

    def __post_init__(self):
        super().__post_init__()
        self._resolve_padding()


def pool_out(self, inputs):
    p = need_input(inputs)
    if p is None:
        return None
    if len(p.shape) != 3:
        raise GraphError(f"expects a (C, H, W) input, got {p}", field="kernel_size",
                         fix="pool 3-D (channel, height, width) values")
    check_padding(p.shape[1:], self.padding)
    out = tuple((n + 2 * pad - k) // s + 1 for n, k, s, pad in
                zip(p.shape[1:], self.kernel_size, self.stride, self.padding))
    if any(o <= 0 for o in out):
        raise GraphError(f"input {p} is too small for kernel {self.kernel_size}",
                         field="kernel_size", fix="use a smaller window")
    return port((p.shape[0],) + out, p.elem)


class _Pool2d(Kind):
    def validate(self, name):
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise GraphError(f"kernel {self.kernel_size}, stride {self.stride}, padding "
                             f"{self.padding} must be positive (padding >= 0)", node=name,
                             field="kernel_size", fix="fix the window")

    def in_ports(self):
        return {"input": port(None, self.elem_in)}

    out_port = pool_out


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class SumPool2d(_Pool2d):
    """Sum over each window (zero padding)."""

    kernel_size: tuple = param(Ints(2))
    stride: tuple = param(Ints(2))
    padding: tuple = param(Ints(2), default=(0, 0))
    elem_in = "real"


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class AvgPool2d(_Pool2d):
    """Mean over each window (zero padding counted, as torch's default)."""

    kernel_size: tuple = param(Ints(2))
    stride: tuple = param(Ints(2))
    padding: tuple = param(Ints(2), default=(0, 0))
    elem_in = "real"


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class Delay(Kind):
    """y(t) = x(t - delay), delay in seconds per element."""

    delay: np.ndarray = param(real)
    stateful = True

    def out_port(self, inputs):
        return port(self.delay.shape)


NIR_KINDS = ("Input", "Output", "Affine", "Linear", "Scale", "Threshold", "Flatten", "Conv1d",
             "Conv2d", "SumPool2d", "AvgPool2d", "Delay", "I", "IF", "LI", "LIF", "CubaLI",
             "CubaLIF", "NIRGraph")
