"""Duck-typed export handlers for the neurons of snnTorch and Norse, straight from their torch
modules (no NIR file in between); neither library is imported: a module is recognised by its
class name and attributes. docs/spiking.md says what each library computes.

snnTorch (1.0) `Leaky(init_hidden=False)`: forward(x, mem) -> (spk, mem); mem <- beta mem + x -
  reset * threshold, the reset taken from the membrane before the step (a delayed reset; with
  reset_delay=False right after the spike), spike
  when mem > threshold. That is NIR's LIF at dt = 1, Euler, with tau = r = 1 / (1 - beta):
  reset_mechanism 'subtract' -> reset_mode 'subtract', 'zero' -> reset to v_reset = 0.
  `Synaptic`: forward(x, syn, mem) -> (spk, syn, mem) with syn <- alpha syn + x first: a CubaLIF
  with tau_syn = w_in = 1 / (1 - alpha); use it as `cell(x)[0]` (the exporter's state protocol
  takes (out, state) pairs, not three values).
Norse (1.1) `LIFBoxCell` / `LIFCell`: forward(x, state) -> (z, state); one Euler step of NIR's
  LIF / CubaLIF at the cell's dt with tau = 1 / tau_inv, r = 1, reset to v_reset at once;
  LIFCell adds the whole input to the current (w_in = tau_syn / dt, see the NIR conventions).
"""
from __future__ import annotations

import numpy as np

from ... import ir
from . import recogniser
from .polyir_nn import _full

_SNNTORCH_RESETS = {"subtract": "subtract", "zero": "v_reset"}


def _named(m, name: str, *attrs) -> bool:
    return type(m).__name__ == name and all(hasattr(m, a) for a in attrs)


def _is_snntorch_neuron(m) -> bool:
    return (type(m).__name__ in ("Leaky", "Synaptic")
            and all(hasattr(m, a) for a in ("beta", "threshold", "reset_mechanism", "init_hidden"))
            and type(m).__module__.startswith("snntorch"))


def _one_minus_inverse(ctx, decay):
    """1 / (1 - decay) per element, the decay clamped to [0, 1] as snnTorch does."""
    d = np.clip(ctx.array(decay).astype(np.float64), 0, 1)
    return _full(ctx, (1 / (1 - d)).astype(ctx.float_dtype))


@recogniser("snntorch.Leaky/Synaptic", _is_snntorch_neuron, returns_state=True)
def _snntorch_neuron(ctx, name, m, values):
    kind = type(m).__name__
    if m.init_hidden:
        raise ctx.error(f"snnTorch {kind} with init_hidden=True keeps its membrane inside the "
                        "module and returns only spikes", field="init_hidden",
                        fix="build it with init_hidden=False and take the spikes as cell(x)[0]")
    for flag in ("inhibition", "state_quant", "output"):
        if getattr(m, flag, False):
            raise ctx.error(f"snnTorch {kind} with {flag} set has no polyir equivalent",
                            field=flag, fix=f"build it without {flag}")
    if m.reset_mechanism not in _SNNTORCH_RESETS:
        raise ctx.error(f"snnTorch reset_mechanism={m.reset_mechanism!r} has no polyir "
                        "equivalent", field="reset_mechanism",
                        fix=f"use one of {sorted(_SNNTORCH_RESETS)}")
    ctx.set_metadata("dt", 1.0)
    ctx.set_metadata("discretization", "euler")
    tau = _one_minus_inverse(ctx, m.beta)
    zeros = np.zeros_like(tau)
    options = {"reset_mode": _SNNTORCH_RESETS[m.reset_mechanism],
               "reset_delay": bool(getattr(m, "reset_delay", True))}
    if type(m).__name__ == "Leaky":
        return ir.LIF(tau, tau.copy(), zeros, _full(ctx, m.threshold), zeros.copy(), **options)
    # Synaptic: i <- alpha i + x, then mem <- beta mem + i with the new current
    tau_syn = _one_minus_inverse(ctx, m.alpha)
    return ir.CubaLIF(tau_syn, tau, tau.copy(), zeros, _full(ctx, m.threshold), zeros.copy(),
                      w_in=tau_syn.copy(), **options)


def _is_norse_cell(m) -> bool:
    return (type(m).__name__ in ("LIFBoxCell", "LIFCell") and hasattr(m, "p")
            and hasattr(m, "dt") and type(m).__module__.startswith("norse"))


@recogniser("norse.LIFBoxCell/LIFCell", _is_norse_cell, returns_state=True)
def _norse_cell(ctx, name, m, values):
    p, dt = m.p, float(m.dt)
    reset = getattr(getattr(p, "reset_method", None), "__name__", "reset_value")  # LIFBox only
    if reset != "reset_value":
        raise ctx.error(f"Norse reset_method {reset} has no polyir "
                        "equivalent", field="reset_method", fix="use Norse's reset_value")
    ctx.set_metadata("dt", dt)
    ctx.set_metadata("discretization", "euler")
    inverse = (lambda t: _full(ctx, (1 / ctx.array(t).astype(np.float64)).astype(ctx.float_dtype)))
    common = {"r": _full(ctx, np.ones((), ctx.float_dtype)), "v_leak": _full(ctx, p.v_leak),
              "v_threshold": _full(ctx, p.v_th), "v_reset": _full(ctx, p.v_reset)}
    if type(m).__name__ == "LIFBoxCell":
        return ir.LIF(inverse(p.tau_mem_inv), **common)
    tau_syn = inverse(p.tau_syn_inv)
    return ir.CubaLIF(tau_syn, inverse(p.tau_mem_inv), w_in=tau_syn / dt, **common)
