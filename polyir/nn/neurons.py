"""Leaky-integrator neurons with an explicit time step: I, IF, LI, LIF, CubaLI, CubaLIF.

Parameters are `nn.Parameter`s of the neuron shape, named like NIR's (and polyir.ir's) fields.
The time constants (tau, tau_syn, tau_mem) are not trained by default (requires_grad=False, as
snnTorch's beta); `neuron.tau.requires_grad_(True)` makes them trainable.
Each module steps once per call: `forward(x, state=None) -> (y, state)`, x of shape
(batch, *shape). The state is a named tuple of tensors (`VState(v)` or `CubaState(i, v)`), zeros
when None is passed.

Discretisations (time step `dt`, input x held constant over the step):

"euler" (default; NIR's reference forward Euler), in this order within one step:
  I:       v <- v + dt r x                                              y = v
  IF:      v <- v + dt r x;  z = v > v_threshold;  v <- v_reset where z  y = z
  LI:      v <- v + dt/tau (v_leak - v + r x)                           y = v
  LIF:     v <- v + dt/tau (v_leak - v + r x);  z = v > v_threshold;  v <- v_reset where z;  y = z
  CubaLI:  i <- i + dt/tau_syn (-i + w_in x);  then v <- v + dt/tau_mem (v_leak - v + r i) with the
           updated i;                                                   y = v
  CubaLIF: CubaLI's two updates, then z = v > v_threshold;  v <- v_reset where z;  y = z

"exact": the exact solution of the linear ODEs over one step for a constant x (zero-order hold):
  LI(F):   v <- v_leak + r x + (v - v_leak - r x) exp(-dt/tau)
  Cuba*:   i <- w_in x + (i - w_in x) exp(-dt/tau_syn);
           v <- v_leak + r w_in x + (v - v_leak - r w_in x - A) exp(-dt/tau_mem) + A exp(-dt/tau_syn),
           A = r (i_old - w_in x) tau_syn / (tau_syn - tau_mem)  (the limit where tau_syn = tau_mem)
  I, IF:   Euler is already exact.
  Spike and reset are the same as with "euler".

Spikes are 0/1 floats. In train mode their gradient is the fast-sigmoid surrogate
d z / d v = 1 / (1 + slope |v - v_threshold|)^2 (slope `surrogate_slope`, default 25); the reset
v <- z v_reset + (1 - z) v lets gradient flow through z.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

__all__ = ["I", "IF", "LI", "LIF", "CubaLI", "CubaLIF", "VState", "CubaState", "spike",
           "DISCRETIZATIONS"]

DISCRETIZATIONS = ("euler", "exact")


class VState(NamedTuple):
    v: torch.Tensor


class CubaState(NamedTuple):
    i: torch.Tensor
    v: torch.Tensor


class _FastSigmoidSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, slope):
        ctx.save_for_backward(u)
        ctx.slope = slope
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad / (1.0 + ctx.slope * u.abs()) ** 2, None


def spike(u: torch.Tensor, slope: float = 25.0, surrogate: bool = True) -> torch.Tensor:
    """Heaviside(u) as 0/1 floats (strict u > 0); fast-sigmoid surrogate gradient if asked."""
    if surrogate and torch.is_grad_enabled() and u.requires_grad:
        return _FastSigmoidSpike.apply(u, float(slope))
    return (u > 0).to(u.dtype)


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


#: the fields that are time constants: requires_grad=False unless a user sets it
TIME_CONSTANTS = ("tau", "tau_syn", "tau_mem")


class _Neuron(nn.Module):
    FIELDS: tuple[str, ...] = ()
    SPIKING = False

    def __init__(self, dt, discretization: str = "euler", surrogate_slope: float = 25.0,
                 **params):
        super().__init__()
        if dt is None:
            raise ValueError(f"{type(self).__name__} needs a time step dt (seconds)")
        self.dt = float(dt)
        if not (self.dt > 0 and math.isfinite(self.dt)):
            raise ValueError(f"dt must be a positive number, got {dt!r}")
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"discretization={discretization!r}: use one of {DISCRETIZATIONS}")
        self.discretization = discretization
        self.surrogate_slope = float(surrogate_slope)
        tensors = [_as_tensor(params[f]) for f in self.FIELDS]
        dtype = tensors[0].dtype
        for t in tensors[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        tensors = torch.broadcast_tensors(*tensors)
        for f, t in zip(self.FIELDS, tensors):
            # time constants are fixed by default (as snnTorch's beta): one optimiser step can
            # make a small tau negative, and the neuron then diverges
            setattr(self, f, nn.Parameter(t.to(dtype).clone(),
                                          requires_grad=f not in TIME_CONSTANTS))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(getattr(self, self.FIELDS[0]).shape)

    def _zeros(self, x):
        shape = torch.broadcast_shapes(x.shape, self.shape)
        return torch.zeros(shape, dtype=x.dtype, device=x.device)

    def _spike_reset(self, v):
        z = spike(v - self.v_threshold, self.surrogate_slope, surrogate=self.training)
        return z, z * self.v_reset + (1 - z) * v

    def extra_repr(self):
        return f"shape={self.shape}, dt={self.dt:g}, discretization={self.discretization!r}"


class I(_Neuron):  # noqa: E742 - NIR's name
    """Integrator: dv/dt = r x; output v. See the module docstring for the step."""

    FIELDS = ("r",)

    def __init__(self, r, dt, discretization="euler"):
        super().__init__(dt, discretization, r=r)

    def forward(self, x, state=None):
        v = self._zeros(x) if state is None else state[0]
        v = v + self.dt * self.r * x
        return v, VState(v)


class IF(_Neuron):
    """Integrate-and-fire: dv/dt = r x; spike z = v > v_threshold, then v = v_reset; output z."""

    FIELDS = ("r", "v_threshold", "v_reset")
    SPIKING = True

    def __init__(self, r, v_threshold, v_reset=0.0, dt=None, discretization="euler",
                 surrogate_slope=25.0):
        super().__init__(dt, discretization, surrogate_slope, r=r, v_threshold=v_threshold,
                         v_reset=v_reset)

    def forward(self, x, state=None):
        v = self._zeros(x) if state is None else state[0]
        v = v + self.dt * self.r * x
        z, v = self._spike_reset(v)
        return z, VState(v)


def _leak(self, v, tau, drive):
    """One step of tau dv/dt = (v_leak - v) + drive."""
    if self.discretization == "euler":
        return v + self.dt / tau * (self.v_leak - v + drive)
    target = self.v_leak + drive
    return target + (v - target) * torch.exp(-self.dt / tau)


class LI(_Neuron):
    """Leaky integrator: tau dv/dt = (v_leak - v) + r x; output v."""

    FIELDS = ("tau", "r", "v_leak")

    def __init__(self, tau, r, v_leak, dt, discretization="euler"):
        super().__init__(dt, discretization, tau=tau, r=r, v_leak=v_leak)

    def forward(self, x, state=None):
        v = self._zeros(x) if state is None else state[0]
        v = _leak(self, v, self.tau, self.r * x)
        return v, VState(v)


class LIF(_Neuron):
    """Leaky integrate-and-fire: LI, then z = v > v_threshold and v = v_reset where z; output z."""

    FIELDS = ("tau", "r", "v_leak", "v_threshold", "v_reset")
    SPIKING = True

    def __init__(self, tau, r, v_leak, v_threshold, v_reset=0.0, dt=None,
                 discretization="euler", surrogate_slope=25.0):
        super().__init__(dt, discretization, surrogate_slope, tau=tau, r=r, v_leak=v_leak,
                         v_threshold=v_threshold, v_reset=v_reset)

    def forward(self, x, state=None):
        v = self._zeros(x) if state is None else state[0]
        v = _leak(self, v, self.tau, self.r * x)
        z, v = self._spike_reset(v)
        return z, VState(v)


def _cuba_step(self, x, state):
    if state is None:
        i, v = self._zeros(x), self._zeros(x)
    else:
        i, v = state
    wx = self.w_in * x
    if self.discretization == "euler":
        i = i + self.dt / self.tau_syn * (wx - i)
        v = v + self.dt / self.tau_mem * (self.v_leak - v + self.r * i)
        return i, v
    ts, tm = self.tau_syn, self.tau_mem
    es, em = torch.exp(-self.dt / ts), torch.exp(-self.dt / tm)
    j = i - wx  # the synaptic current's distance to its fixed point
    u = v - self.v_leak - self.r * wx  # the membrane's distance to its fixed point
    diff = ts - tm
    close = diff.abs() <= 1e-9 * torch.maximum(ts.abs(), tm.abs())
    safe = torch.where(close, torch.ones_like(diff), diff)
    a = self.r * j * ts / safe
    u_far = (u - a) * em + a * es
    u_near = (u + self.r * j * self.dt / tm) * em
    u = torch.where(close, u_near, u_far)
    return wx + j * es, self.v_leak + self.r * wx + u


class CubaLI(_Neuron):
    """Current-based LI: tau_syn di/dt = -i + w_in x; tau_mem dv/dt = (v_leak - v) + r i; output
    v. Euler updates i first, then v from the updated i."""

    FIELDS = ("tau_syn", "tau_mem", "r", "v_leak", "w_in")

    def __init__(self, tau_syn, tau_mem, r, v_leak, w_in=1.0, dt=None, discretization="euler"):
        super().__init__(dt, discretization, tau_syn=tau_syn, tau_mem=tau_mem, r=r, v_leak=v_leak,
                         w_in=w_in)

    def forward(self, x, state=None):
        i, v = _cuba_step(self, x, state)
        return v, CubaState(i, v)


class CubaLIF(_Neuron):
    """Current-based LIF: CubaLI's step, then z = v > v_threshold and v = v_reset where z;
    output z."""

    FIELDS = ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")
    SPIKING = True

    def __init__(self, tau_syn, tau_mem, r, v_leak, v_threshold, v_reset=0.0, w_in=1.0, dt=None,
                 discretization="euler", surrogate_slope=25.0):
        super().__init__(dt, discretization, surrogate_slope, tau_syn=tau_syn, tau_mem=tau_mem,
                         r=r, v_leak=v_leak, v_threshold=v_threshold, v_reset=v_reset, w_in=w_in)

    def forward(self, x, state=None):
        i, v = _cuba_step(self, x, state)
        z, v = self._spike_reset(v)
        return z, CubaState(i, v)
