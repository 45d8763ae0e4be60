"""Export handlers for sinabs' spiking layers, recognised by class name and attributes.

sinabs (3.1) `IAF` / `LIF` / `IAFSqueeze` / `LIFSqueeze`: forward((batch, time, ...)) loops over
  time inside and keeps its state; the exported node is one of those steps (registered with
  returns_state=False: the module returns spikes only). Per step, at dt = 1: (i <- a_syn (i + x)),
  v <- a v + (1 - a) i (norm_input) or + i, then spike_fn and reset_fn; Euler with
  tau = 1 / (1 - a) is that step.
"""
from __future__ import annotations

import numpy as np

from .... import ir
from .. import recogniser
from .common import full, one_minus_inverse, set_euler


def _is_sinabs_layer(m) -> bool:
    return (type(m).__name__ in ("IAF", "LIF", "IAFSqueeze", "LIFSqueeze")
            and type(m).__module__.startswith("sinabs")
            and all(hasattr(m, a) for a in ("spike_fn", "reset_fn", "spike_threshold")))


def _sinabs_spikes(ctx, m) -> dict:
    """spike_rule / reset fields of a sinabs layer's spike_fn and reset_fn."""
    spike_fn, reset_fn = m.spike_fn, m.reset_fn
    fn_name = getattr(spike_fn, "__name__", type(spike_fn).__name__)
    if fn_name == "SingleSpike":
        options = {"spike_rule": "single"}
    elif fn_name == "MultiSpike":
        options = {"spike_rule": "multi"}
    elif fn_name == "MaxSpike":  # a cap of None is MultiSpike
        options = {"spike_rule": "multi", "max_spikes": spike_fn.max_num_spikes_per_bin}
    else:
        raise ctx.error(f"sinabs spike_fn {fn_name} has no polyir equivalent", field="spike_fn",
                        fix="use SingleSpike, MultiSpike or MaxSpike")
    options["threshold_compare"] = ">="
    reset = type(reset_fn).__name__
    threshold = ctx.array(m.spike_threshold)
    if reset == "MembraneSubtract":
        value = reset_fn.subtract_value
        if value is not None and not np.all(np.asarray(value) == threshold):
            raise ctx.error(f"sinabs MembraneSubtract(subtract_value={value}) subtracts other "
                            f"than the threshold {threshold}", field="reset_fn",
                            fix="use MembraneSubtract() (subtract_value=None)")
        options["reset_mode"] = "subtract"
    elif reset == "MembraneReset":
        if reset_fn.reset_value != 0:
            raise ctx.error(f"sinabs MembraneReset(reset_value={reset_fn.reset_value}) adds "
                            "reset_value to every membrane each step, spiking or not",
                            field="reset_fn", fix="use MembraneReset() (reset_value=0)")
        options["reset_mode"] = "v_reset"
    else:
        raise ctx.error(f"sinabs reset_fn {reset} has no polyir equivalent", field="reset_fn",
                        fix="use MembraneSubtract() or MembraneReset()")
    return options


@recogniser("sinabs.IAF/LIF/IAFSqueeze/LIFSqueeze", _is_sinabs_layer, returns_state=False)
def _sinabs_layer(ctx, name, m, values):
    kind = type(m).__name__
    if m.min_v_mem is not None:
        raise ctx.error(f"sinabs {kind} with min_v_mem={float(m.min_v_mem)} clips the membrane; "
                        "polyir's neurons have no lower bound", field="min_v_mem",
                        fix="train it without min_v_mem")
    options = _sinabs_spikes(ctx, m)
    set_euler(ctx, 1.0)
    threshold = full(ctx, m.spike_threshold)
    zeros = np.zeros_like(threshold)
    alpha_syn = m.alpha_syn_calculated
    if kind.startswith("IAF"):
        if alpha_syn is not None:
            raise ctx.error(f"sinabs {kind} with tau_syn integrates a decaying current into a "
                            "membrane that never leaks; polyir has no such neuron",
                            field="tau_syn", fix="use sinabs LIF with tau_syn, or IAF without it")
        return ir.IF(np.ones_like(threshold), threshold, zeros, **options)
    # sinabs' step: (i <- a_syn (i + x)), v <- a_mem v + (1 - a_mem) i (norm_input) or + i.
    # Euler at dt = 1 with tau = 1 / (1 - a) is the same step: s <- a s + (gain / tau) drive.
    fix = "give every time constant a finite value (IAF for none)"
    tau_mem = one_minus_inverse(ctx, m.alpha_mem_calculated, "tau_mem", fix)
    r = np.ones_like(tau_mem) if m.norm_input else tau_mem.copy()
    if alpha_syn is None:
        return ir.LIF(tau_mem, r, zeros, threshold, zeros.copy(), **options)
    tau_syn = one_minus_inverse(ctx, alpha_syn, "tau_syn", fix)
    w_in = (full(ctx, alpha_syn).astype(np.float64) * tau_syn).astype(ctx.float_dtype)
    return ir.CubaLIF(tau_syn, tau_mem, r, zeros, threshold, zeros.copy(), w_in=w_in, **options)
