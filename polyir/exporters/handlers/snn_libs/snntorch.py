"""Export handlers for snnTorch's neurons, recognised by class name and attributes.

snnTorch (1.0) `Leaky(init_hidden=False)`: forward(x, mem) -> (spk, mem); mem <- beta mem + x -
  reset * threshold, the reset taken from the membrane before the step (a delayed reset; with
  reset_delay=False right after the spike), spike
  when mem > threshold. That is NIR's LIF at dt = 1, Euler, with tau = r = 1 / (1 - beta):
  reset_mechanism 'subtract' -> reset_mode 'subtract', 'zero' -> reset to v_reset = 0 (the
  others zero the membrane after integrating, see below), 'none' -> reset_mode 'none' (never
  reset). reset_delay=False with 'subtract' -> reset_mode 'subtract_pending_in_test': snnTorch
  subtracts the delayed reset r = (mem > thr) before the spike test and adds it back after
  (mem - (spk - r) thr), so a membrane left above threshold by a reset needs twice the
  threshold to spike again.
  `Synaptic`: forward(x, syn, mem) -> (spk, syn, mem) with syn <- alpha syn + x first: a CubaLIF
  with tau_syn = w_in = 1 / (1 - alpha); used as `cell(x)[0]` or `spk, syn, mem = cell(x)`.
  `RLeaky` / `RSynaptic`: the same neurons with the spikes of the previous step fed back through
  the module's own `recurrent` layer into the input (syn for RSynaptic): a fragment neuron ->
  recurrent layer -> neuron whose edge leaving the neuron is read one step late, so the
  recurrent bias acts from the first step, as in snnTorch. The layer is the Linear
  (`linear_features`) or the Conv2d (`conv2d_channels`, `kernel_size`) of `all_to_all=True`, or
  a Scale by `V` for `all_to_all=False` (one-to-one).
  With reset_mechanism='zero', Synaptic, RLeaky and RSynaptic set the membrane to 0 after the
  step's integration (mem - reset * mem_new; syn integrates on), so the input of the step after
  a spike never reaches it: reset_mode 'v_reset_after_update'. With reset_delay=False every
  snnTorch neuron zeroes the membrane right after the spike (the delayed reset then finds a
  membrane of 0): reset_mode 'v_reset'.
  `Lapicque`: forward(x, mem) -> (spk, mem); mem <- (1 - dt / (R C)) mem + x dt / C with
  dt = time_step, always the delayed reset ('zero' after the update, as Synaptic): NIR's LIF,
  Euler at dt, with tau = R C and r = R. Its beta only derives R or C at construction; the
  forward reads R, C and time_step.
"""
from __future__ import annotations

import numpy as np

from .... import ir
from .. import recogniser
from ..torch_nn import _conv2d, _linear
from .common import decays, full, one_minus_inverse, set_euler, with_recurrence

_SNNTORCH_RESETS = {"subtract": "subtract", "zero": "v_reset", "none": "none"}
#: the snnTorch neurons whose delayed 'zero' reset zeroes the membrane after the step's update
_ZERO_AFTER_UPDATE = ("Synaptic", "RLeaky", "RSynaptic", "Lapicque")
_SNNTORCH_NEURONS = ("Leaky", "Synaptic", "RLeaky", "RSynaptic", "Lapicque")


def _is_snntorch_neuron(m) -> bool:
    return (type(m).__name__ in _SNNTORCH_NEURONS
            and all(hasattr(m, a) for a in ("beta", "threshold", "reset_mechanism", "init_hidden"))
            and type(m).__module__.startswith("snntorch"))


def _refusal(m):
    """(message, field, fix) for the options polyir cannot express, or snnTorch cannot run."""
    kind = type(m).__name__
    if m.init_hidden:
        return (f"snnTorch {kind} with init_hidden=True keeps its membrane inside the module and "
                "returns only spikes", "init_hidden",
                "build it with init_hidden=False and take the spikes as cell(x)[0]")
    for flag in ("inhibition", "state_quant", "output"):
        if getattr(m, flag, False):
            return (f"snnTorch {kind} with {flag} set has no polyir equivalent", flag,
                    f"build it without {flag}")
    if m.reset_mechanism not in _SNNTORCH_RESETS:
        return (f"snnTorch reset_mechanism={m.reset_mechanism!r} has no polyir equivalent",
                "reset_mechanism", f"use one of {sorted(_SNNTORCH_RESETS)}")
    if kind == "RSynaptic" and not getattr(m, "reset_delay", True):
        # snnTorch 1.0's RSynaptic.forward(x) fails with it; given its spikes back it resets a
        # copy of the membrane and returns the delayed reset's membrane anyway
        return ("snnTorch RSynaptic with reset_delay=False does not run in snnTorch 1.0 (its "
                "forward fails, or resets only a local copy of the membrane)", "reset_delay",
                "build it with reset_delay=True (the default)")
    return None


@recogniser("snntorch." + "/".join(_SNNTORCH_NEURONS), _is_snntorch_neuron,
            returns_state=True, check=_refusal)
def _snntorch_neuron(ctx, name, m, values):
    kind = type(m).__name__
    dt = float(m.time_step) if kind == "Lapicque" else 1.0
    set_euler(ctx, dt)
    threshold = full(ctx, m.threshold)
    zeros = np.zeros_like(threshold)
    options = {"reset_mode": _SNNTORCH_RESETS[m.reset_mechanism],  # Lapicque always delays
               "reset_delay": kind == "Lapicque" or bool(getattr(m, "reset_delay", True))}
    if m.reset_mechanism == "zero" and options["reset_delay"] and kind in _ZERO_AFTER_UPDATE:
        options["reset_mode"] = "v_reset_after_update"
    if m.reset_mechanism == "subtract" and not options["reset_delay"]:
        options["reset_mode"] = "subtract_pending_in_test"
    if m.reset_mechanism == "none":  # nothing to delay
        options["reset_delay"] = False
    if kind == "Lapicque":
        r = full(ctx, m.R).astype(np.float64)
        tau = (r * full(ctx, m.C)).astype(ctx.float_dtype)
        neuron = ir.LIF(tau, r.astype(ctx.float_dtype), zeros, threshold, zeros.copy(), **options)
    elif kind in ("Leaky", "RLeaky") and np.all(decays(ctx, m.beta) == 1):  # mem <- mem + x
        neuron = ir.IF(np.ones_like(threshold), threshold, zeros, **options)
    elif kind in ("Leaky", "RLeaky"):
        tau = one_minus_inverse(ctx, m.beta, "beta", "use beta < 1 for every neuron, or 1 for "
                                                      "all of them (integrate-and-fire)")
        neuron = ir.LIF(tau, tau.copy(), zeros, threshold, zeros.copy(), **options)
    else:  # Synaptic: i <- alpha i + x, then mem <- beta mem + i with the new current
        fix = "use decays below 1"
        tau, tau_syn = (one_minus_inverse(ctx, getattr(m, f), f, fix) for f in ("beta", "alpha"))
        neuron = ir.CubaLIF(tau_syn, tau, tau.copy(), zeros, threshold, zeros.copy(),
                            w_in=tau_syn.copy(), **options)
    if kind.startswith("R"):
        return with_recurrence(ctx, neuron, _recurrent_layer(ctx, name, m))
    return neuron


def _recurrent_layer(ctx, name, m):
    """The module's own `recurrent` layer: a Linear, a same-size Conv2d, or a Scale by V
    (all_to_all=False)."""
    if not m.all_to_all:
        return ir.Scale(full(ctx, m.V))
    if type(m.recurrent).__name__ == "Linear":
        return _linear(ctx, name, m.recurrent, {})
    return _conv2d(ctx, name, m.recurrent, {})  # conv2d_channels and kernel_size
