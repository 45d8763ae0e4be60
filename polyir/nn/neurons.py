"""Neurons with an explicit time step: I, IF, LI, LIF, CubaLI, CubaLIF.

Each layer realises the polyir.ir kind of the same name and reads everything about it from there:
the parameter fields (`nn.Parameter`s of the neuron shape, named like the kind's fields), the
state variables, the extension fields of spiking kinds, and the discrete step
(`ir.Neuron.step_coefficients`, see polyir.ir.kinds.neurons for the formulas of "euler" and
"exact"). Each module steps once per call: `forward(x, state=None) -> (y, state)`, x of shape
(batch, *shape); the state is a named tuple of the kind's state variables (`VState(v)`,
`CubaState(i, v)`), zeros when None is passed.
The time constants (each state's tau field) are not trained by default (requires_grad=False, as
snnTorch's beta: one optimiser step can make a small tau negative, and the neuron then diverges);
`neuron.tau.requires_grad_(True)` makes them trainable.

The step coefficients are computed in float64 from the parameters and rounded to the module's
dtype, every step while gradients are recorded (so tau and friends train) and once per parameter
version otherwise; the C and CUDA backends compute the same numbers with numpy.

Spikes are floats (0/1, or counts with spike_rule="multi"). In train mode their gradient is the
fast-sigmoid surrogate d z / d v = 1 / (1 + slope |v - v_threshold|)^2 (slope `surrogate_slope`,
default 25); the reset v <- f v_reset + (1 - f) v (f: fired) lets gradient flow through z.
"""
from __future__ import annotations

import collections
import math

import numpy as np
import torch
from torch import nn

from .. import ir
from ..ir.kinds.neurons import DISCRETIZATIONS

__all__ = ["I", "IF", "LI", "LIF", "CubaLI", "CubaLIF", "VState", "CubaState", "spike",
           "DISCRETIZATIONS", "Neuron", "LAYERS"]

_STATE_TUPLES: dict[tuple, type] = {}


def state_tuple(names: tuple[str, ...]) -> type:
    """The named tuple class for a set of state variables (one class per set)."""
    if names not in _STATE_TUPLES:
        title = "".join(n.capitalize() for n in names)
        _STATE_TUPLES[names] = collections.namedtuple(f"State{title}", names)
    return _STATE_TUPLES[names]


VState = state_tuple(ir.LI.state_names())
CubaState = state_tuple(ir.CubaLI.state_names())


class _FastSigmoidSpike(torch.autograd.Function):
    """Forward: the given spike values; backward: the fast-sigmoid surrogate of u."""

    @staticmethod
    def forward(ctx, u, z, slope):
        ctx.save_for_backward(u)
        ctx.slope = slope
        return z

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad / (1.0 + ctx.slope * u.abs()) ** 2, None, None


def fire(v, threshold, node, slope: float = 25.0, surrogate: bool = True) -> torch.Tensor:
    """Spikes of membrane `v` under the spiking kind's extension fields (`node`'s threshold
    comparison and spike rule), with the surrogate gradient if asked."""
    u = v - threshold
    above = u >= 0 if node.threshold_compare == ">=" else u > 0
    if node.spike_rule == "multi":
        z = torch.where(above, torch.floor(v / threshold), torch.zeros_like(v))
        if node.max_spikes is not None:
            z = torch.clamp(z, max=float(node.max_spikes))
    else:
        z = above.to(v.dtype)
    if surrogate and torch.is_grad_enabled() and u.requires_grad:
        return _FastSigmoidSpike.apply(u, z, float(slope))
    return z


def spike(u: torch.Tensor, slope: float = 25.0, surrogate: bool = True) -> torch.Tensor:
    """Heaviside(u) as 0/1 floats (strict u > 0); fast-sigmoid surrogate gradient if asked."""
    z = (u > 0).to(u.dtype)
    if surrogate and torch.is_grad_enabled() and u.requires_grad:
        return _FastSigmoidSpike.apply(u, z, float(slope))
    return z


def _as_tensor(value) -> torch.Tensor:
    """numpy arrays and tensors keep their float dtype; Python numbers get torch's default."""
    if isinstance(value, torch.Tensor):
        t = value.detach().clone()
    elif isinstance(value, (np.ndarray, np.generic)) and np.asarray(value).dtype.kind == "f":
        t = torch.from_numpy(np.array(value))
    else:
        t = torch.tensor(np.asarray(value, dtype=np.float64).tolist(),
                         dtype=torch.get_default_dtype())
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


class Neuron(nn.Module):
    """The torch layer of a neuron kind (`kind`, a polyir.ir kind). Positional arguments are the
    kind's parameter fields in order; keywords may also set its extension fields. `dt` (seconds)
    is required; `discretization` is "euler" or "exact"."""

    kind: type = ir.Neuron

    def __init__(self, *args, dt=None, discretization: str = "euler",
                 surrogate_slope: float = 25.0, **kwargs):
        super().__init__()
        name = type(self).__name__
        fields = self.kind.parameter_fields()
        if len(args) > len(fields):
            raise TypeError(f"{name} takes at most {len(fields)} positional parameters {fields}; "
                            "pass dt= and the rest by keyword")
        params = dict(zip(fields, args))
        options = {}
        for k, v in kwargs.items():
            if k in params:
                raise TypeError(f"{name} got {k!r} twice")
            if k in fields:
                params[k] = v
            elif k in self.kind.option_fields():
                options[k] = v
            else:
                raise TypeError(f"{name} has no parameter {k!r}; its fields are {fields}")
        for f, (_, fill) in self.kind.fills.items():
            if params.get(f) is None:
                params[f] = fill
        missing = [f for f in fields if f not in params]
        if missing:
            raise TypeError(f"{name} needs {missing}")
        if dt is None:
            raise ValueError(f"{name} needs a time step dt (seconds)")
        self.dt = float(dt)
        if not (self.dt > 0 and math.isfinite(self.dt)):
            raise ValueError(f"dt must be a positive number, got {dt!r}")
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"discretization={discretization!r}: use one of {DISCRETIZATIONS}")
        self.discretization = discretization
        self.surrogate_slope = float(surrogate_slope)
        # the kind checks the extension fields (and keeps their values)
        self.options = self.kind(*[np.zeros(())] * len(fields), **options)
        tensors = [_as_tensor(params[f]) for f in fields]
        dtype = tensors[0].dtype
        for t in tensors[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        tensors = torch.broadcast_tensors(*tensors)
        fixed = self.kind.time_constant_fields()
        for f, t in zip(fields, tensors):
            setattr(self, f, nn.Parameter(t.to(dtype).clone(), requires_grad=f not in fixed))
        self._cache = None

    FIELDS = property(lambda self: self.kind.parameter_fields())

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(getattr(self, self.FIELDS[0]).shape)

    def to_ir(self):
        """This layer's parameters and options as its polyir kind (numpy arrays)."""
        values = {f: getattr(self, f).detach().cpu().numpy().copy() for f in self.FIELDS}
        return self.kind(**values, **self.options.non_default_options())

    def coefficients(self) -> dict:
        """The per-state step coefficients in the parameters' dtype (see the module docstring)."""
        params = [getattr(self, f) for f in self.FIELDS]
        key = (self.dt, self.discretization,
               tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in params))
        if not torch.is_grad_enabled() and self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        dtype = params[0].dtype
        wide = {f: p.to(torch.float64) for f, p in zip(self.FIELDS, params)}
        coeffs = self.kind.step_coefficients(wide, self.dt, self.discretization, xp=torch)
        for q in coeffs.values():
            q.a, q.b, q.c = q.a.to(dtype), q.b.to(dtype), q.c.to(dtype)
            q.k = None if q.k is None else q.k.to(dtype)
        if not torch.is_grad_enabled():
            self._cache = (key, coeffs)
        return coeffs

    def forward(self, x, state=None):
        names = self.kind.state_names()
        if state is None:
            zeros = torch.zeros(torch.broadcast_shapes(x.shape, self.shape), dtype=x.dtype,
                                device=x.device)
            state = (zeros,) * len(names)
        s = dict(zip(names, state))
        spk = self.kind.spike
        if spk is None:
            s = self.kind.advance(self.coefficients(), s, x)
            return s[names[-1]], state_tuple(names)(*s.values())
        opts = self.options
        thr, reset = getattr(self, spk.threshold), getattr(self, spk.reset)
        if opts.reset_delay or opts.reset_mode == "subtract_pending_in_test":
            # the spikes of the carried membrane reset it now (or enter this step's spike test)
            pending = fire(s[spk.state], thr, opts, surrogate=False).detach()
            if opts.reset_mode == "v_reset":
                s[spk.state] = self._reset(s[spk.state], pending, reset)
        s = self.kind.advance(self.coefficients(), s, x)
        v = s[spk.state]
        if opts.reset_delay and opts.reset_mode == "subtract":
            v = v - pending * thr
        elif opts.reset_delay and opts.reset_mode == "v_reset_after_update":
            v = self._reset(v, pending, reset)
        if opts.reset_mode == "subtract_pending_in_test":
            z = fire(v - pending * thr, thr, opts, self.surrogate_slope, surrogate=self.training)
        else:
            z = fire(v, thr, opts, self.surrogate_slope, surrogate=self.training)
        if opts.reset_mode in ("subtract", "subtract_pending_in_test") and not opts.reset_delay:
            v = v - z * thr
        elif not opts.reset_delay and opts.reset_mode != "none":
            v = self._reset(v, z, reset)
        s[spk.state] = v
        return z, state_tuple(names)(*s.values())

    def _reset(self, v, z, reset):
        fired = z if self.options.spike_rule == "single" else (z > 0).to(v.dtype)
        return fired * reset + (1 - fired) * v

    def extra_repr(self):
        opts = self.options.non_default_options()
        return (f"shape={self.shape}, dt={self.dt:g}, discretization={self.discretization!r}"
                + "".join(f", {k}={v!r}" for k, v in opts.items()))


#: ir kind class -> its torch layer class
LAYERS: dict[type, type] = {}


def _layer(kind):
    cls = type(kind.__name__, (Neuron,), {"kind": kind, "__doc__": kind.__doc__,
                                          "__module__": __name__})
    LAYERS[kind] = cls
    return cls


I = _layer(ir.I)  # noqa: E741 - NIR's name
IF = _layer(ir.IF)
LI = _layer(ir.LI)
LIF = _layer(ir.LIF)
CubaLI = _layer(ir.CubaLI)
CubaLIF = _layer(ir.CubaLIF)
