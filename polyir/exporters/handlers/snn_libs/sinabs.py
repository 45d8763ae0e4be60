"""Export handlers for sinabs' layers, recognised by class name and attributes.

sinabs (3.1) layers take (batch, time, ...) and loop over time inside, keeping their state; the
exported node is one of those steps (registered with returns_state=False: the module returns
its output only), and the example run calls one step of it from rest (`example_step`), then puts
the layer's own state back. The `...Squeeze` variants take (batch * time, ...); their one step is
that of the layer they extend, so any batch of one time step is an example input. Options without a polyir form are refused by the layer's
attributes before the model runs (`check`).

Per step, at dt = 1, each layer computes (functional.lif_forward_single):
    i <- a_syn (i + x)             (with tau_syn; else i = x)
    v <- a_mem v + (1 - a_mem) i   (norm_input) or a_mem v + i
then spike_fn and reset_fn. Euler with tau = 1 / (1 - a) is that step (`common.set_euler`):
- `IAF` / `IAFSqueeze` (a_mem = 1, never normed) -> IF, with tau_syn the chain LI -> IF (the LI's
  output is the current, tau = 1 / (1 - a_syn), r = a_syn tau; CubaLIF has no membrane that
  never leaks); `LIF` / `LIFSqueeze` -> LIF, or CubaLIF with tau_syn = 1 / (1 - a_syn),
  w_in = a_syn tau_syn; r = 1 with norm_input, else tau_mem.
- spike_fn SingleSpike (v - thr >= 0) -> spike_rule 'single'; MultiSpike ((v > 0) trunc(v / thr))
  -> 'multi'; MaxSpike(n) -> 'multi' with max_spikes n; threshold_compare '>='. reset_fn
  MembraneSubtract -> reset_mode 'subtract' (once per spike); MembraneReset() -> 'v_reset' to 0.
- `IAFRecurrent` / `LIFRecurrent` / `ALIFRecurrent`: the same neuron, plus rec_connect(spikes) of the previous step
  added to the input x (before the synaptic current and the norm_input scaling); the first step
  adds zeros. Exported as the fragment neuron -> rec_connect -> neuron whose edge leaving the
  neuron is read one step late (`common.with_recurrence`); rec_connect, any module, is exported
  by polyir.export itself. It must map zero spikes to zero (no bias: polyir's recurrent layer
  runs on the zero spikes of the first step, sinabs adds nothing then), hold no state and return
  the neuron's shape (sinabs reshapes its output; polyir has no reshape).
- `ExpLeak` / `ExpLeakSqueeze` (no spike_fn: the output is the membrane) -> LI with v_leak 0,
  r = 1 with norm_input (off by default), else tau_mem.
- `ALIF` / `ALIFRecurrent` / `ALIFSqueeze`: the threshold b0 + adapt_scale b rises with every
  spike (b <- a_adapt b + (1 - a_adapt) spikes) and the reset subtracts that raised threshold;
  polyir's neurons have a fixed threshold, so only adapt_scale = 0 exports (it is the LIF of
  threshold b0). ALIF's norm_input scales the stored synaptic current itself (i <- (1 - a_mem)
  a_syn (i + x), v <- a_mem v + i): a CubaLIF of decay (1 - a_mem) a_syn and r = tau_mem.
min_v_mem (a membrane floor), MembraneReset(reset_value != 0),
MembraneSubtract(subtract_value) other than the threshold, MultiSpike / MaxSpike with a threshold
<= 0 and other spike or reset functions are refused. surrogate_grad_fn shapes gradients only and
record_states only records: neither changes the output.

`SumPool2d` (torch's LPPool2d with p = 1, no time axis) -> SumPool2d without padding; sinabs
computes it as the window's average times its area, equal to the sum on spike counts for windows
of up to 4 x 4 (a 5 x 5 average can be one ulp off). ceil_mode and p != 1 are refused.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from .... import ir
from .. import recogniser
from .common import full, one_minus_inverse, set_euler, with_recurrence

_FAMILIES = ("IAF", "LIF", "ExpLeak", "ALIF")
_LAYERS = tuple(f + v for f in _FAMILIES for v in ("", "Squeeze", "Recurrent"))


def _is_sinabs_layer(m) -> bool:
    return (type(m).__name__ in _LAYERS and type(m).__module__.startswith("sinabs")
            and all(hasattr(m, a) for a in ("spike_fn", "reset_fn", "min_v_mem", "norm_input")))


def _one_step(m, x):
    """One time step of sinabs layer `m` on the example input x (batch, ...), from zero state;
    the layer's own state is put back afterwards."""
    saved = dict(m.named_buffers(recurse=False))
    for name in saved:  # an empty buffer: the layer starts from zeros of the input's shape
        m.register_buffer(name, torch.zeros(0, dtype=x.dtype, device=x.device))
    # a Squeeze layer's own forward splits (batch * time, ...) by its batch_size or
    # num_timesteps; one step is its unsqueezed base layer's forward on (batch, 1, ...)
    name = type(m).__name__.removesuffix("Squeeze")
    forward = next(c for c in type(m).__mro__ if c.__name__ == name).forward
    try:
        return forward(m, x.unsqueeze(1))[:, 0]
    finally:
        for name, buffer in saved.items():
            m.register_buffer(name, buffer)


_SPIKE_RULES = {"SingleSpike": "single", "MultiSpike": "multi", "MaxSpike": "multi"}
_RESET_MODES = {"MembraneSubtract": "subtract", "MembraneReset": "v_reset"}


def _family(m) -> str:
    return type(m).__name__.removesuffix("Squeeze").removesuffix("Recurrent")


def _threshold(m):
    """The layer's spike threshold (ALIF keeps its base threshold as b0)."""
    return m.b0 if _family(m) == "ALIF" else m.spike_threshold


def _refusal(m):
    """(message, field, fix) for a sinabs layer whose options polyir cannot express, decided by
    its attributes before the model runs; None when it exports."""
    kind, family = type(m).__name__, _family(m)
    if m.min_v_mem is not None:
        return (f"sinabs {kind} with min_v_mem={float(m.min_v_mem)} clips the membrane; polyir's "
                "neurons have no lower bound", "min_v_mem", "train it without min_v_mem")
    if family == "ExpLeak":
        return None
    if family == "ALIF" and np.any(np.asarray(torch.as_tensor(m.adapt_scale).detach()) != 0):
        return (f"sinabs {kind} raises its threshold by adapt_scale * b after every spike (b "
                "decays with tau_adapt) and subtracts that raised threshold on reset; polyir's "
                "neurons have a fixed threshold", "adapt_scale",
                "replace it by sinabs LIF (or LIFRecurrent) with the same tau_mem, tau_syn and "
                "spike_threshold and fine-tune; ALIF with adapt_scale=0 is that LIF and exports "
                "as it is")
    fn_name = getattr(m.spike_fn, "__name__", type(m.spike_fn).__name__)
    threshold = np.asarray(torch.as_tensor(_threshold(m)).detach().cpu(), np.float64)
    if fn_name not in _SPIKE_RULES:
        return (f"sinabs spike_fn {fn_name} has no polyir equivalent", "spike_fn",
                f"use one of {sorted(_SPIKE_RULES)}")
    if _SPIKE_RULES[fn_name] == "multi" and np.any(threshold <= 0):
        return (f"sinabs {fn_name} counts (v > 0) trunc(v / threshold) spikes, which is no spike "
                "count for a threshold <= 0", "spike_threshold", "use a positive spike_threshold")
    reset_fn = m.reset_fn
    reset = type(reset_fn).__name__
    if reset not in _RESET_MODES:
        return (f"sinabs reset_fn {reset} has no polyir equivalent", "reset_fn",
                "use MembraneSubtract() or MembraneReset()")
    value = getattr(reset_fn, "subtract_value", None)
    if value is not None and not np.all(np.asarray(value) == threshold):
        return (f"sinabs MembraneSubtract(subtract_value={value}) subtracts other than the "
                f"threshold {threshold}", "reset_fn", "use MembraneSubtract() (subtract_value=None)")
    if getattr(reset_fn, "reset_value", 0) != 0:
        return (f"sinabs MembraneReset(reset_value={reset_fn.reset_value}) adds reset_value to "
                "every membrane each step, spiking or not", "reset_fn",
                "use MembraneReset() (reset_value=0)")
    return None


def _spike_options(m) -> dict:
    """spike_rule / reset fields of a sinabs layer's spike_fn and reset_fn (`_refusal` passed)."""
    fn_name = getattr(m.spike_fn, "__name__", type(m.spike_fn).__name__)
    options = {"spike_rule": _SPIKE_RULES[fn_name], "threshold_compare": ">=",
               "reset_mode": _RESET_MODES[type(m.reset_fn).__name__]}
    if fn_name == "MaxSpike":  # a cap of None is MultiSpike
        options["max_spikes"] = m.spike_fn.max_num_spikes_per_bin
    return options


@recogniser("sinabs layers (IAF, LIF, ExpLeak, ALIF and their Squeeze / Recurrent forms)",
            _is_sinabs_layer, returns_state=False, check=_refusal, example_step=_one_step)
def _sinabs_layer(ctx, name, m, values):
    set_euler(ctx, 1.0)
    family = _family(m)
    if family == "ExpLeak":
        tau = one_minus_inverse(ctx, m.alpha_mem_calculated, "tau_mem",
                                "give tau_mem a finite value")
        return ir.LI(tau, np.ones_like(tau) if m.norm_input else tau.copy(), np.zeros_like(tau))
    threshold = full(ctx, _threshold(m))
    options = _spike_options(m)
    if family == "IAF":
        neuron = ir.IF(np.ones_like(threshold), threshold, np.zeros_like(threshold), **options)
        if m.alpha_syn_calculated is not None:  # a current that leaks into one that never does
            neuron = [_synaptic_current(ctx, m.alpha_syn_calculated), neuron]
    else:  # ALIF's norm_input scales the stored synaptic current itself
        normed = family == "ALIF" and bool(m.norm_input) and m.alpha_syn_calculated is not None
        neuron = _leaky(ctx, m, threshold, options, m.alpha_syn_calculated, normed_syn=normed)
    if type(m).__name__.endswith("Recurrent"):
        return with_recurrence(ctx, neuron, _rec_connect(ctx, m, type(m).__name__))
    return neuron


def _synaptic_current(ctx, alpha_syn) -> ir.LI:
    """sinabs' i <- a_syn (i + x) as a node of its own: an LI whose output is the current (Euler
    at dt = 1 with tau = 1 / (1 - a_syn) and r = a_syn tau)."""
    tau = one_minus_inverse(ctx, alpha_syn, "tau_syn", "give tau_syn a finite value")
    r = (full(ctx, alpha_syn).astype(np.float64) * tau).astype(ctx.float_dtype)
    return ir.LI(tau, r, np.zeros_like(tau))


def _leaky(ctx, m, threshold, options: dict, alpha_syn, normed_syn: bool):
    """LIF or CubaLIF of sinabs' step. Euler at dt = 1 with tau = 1 / (1 - a) is the same step:
    s <- a s + (gain / tau) drive. normed_syn: the stored current is already scaled by
    (1 - a_mem) (ALIF's norm_input), so the membrane adds it unscaled."""
    fix = "give every time constant a finite value (IAF for none)"
    alpha_mem = m.alpha_mem_calculated
    tau_mem = one_minus_inverse(ctx, alpha_mem, "tau_mem", fix)
    r = np.ones_like(tau_mem) if m.norm_input and not normed_syn else tau_mem.copy()
    zeros = np.zeros_like(threshold)
    if alpha_syn is None:
        return ir.LIF(tau_mem, r, zeros, threshold, zeros.copy(), **options)
    decay = ctx.array(alpha_syn).astype(np.float64)
    if normed_syn:
        decay = decay * (1 - ctx.array(alpha_mem).astype(np.float64))
    tau_syn = one_minus_inverse(ctx, decay, "tau_syn", fix)
    w_in = (full(ctx, decay) * tau_syn).astype(ctx.float_dtype)
    return ir.CubaLIF(tau_syn, tau_mem, r, zeros, threshold, zeros.copy(), w_in=w_in, **options)


def _is_sinabs_sum_pool(m) -> bool:
    return (type(m).__name__ == "SumPool2d" and type(m).__module__.startswith("sinabs")
            and all(hasattr(m, a) for a in ("norm_type", "kernel_size", "ceil_mode")))


def _pool_refusal(m):
    if m.norm_type != 1:
        return (f"sinabs SumPool2d with norm_type={m.norm_type} is an Lp pooling, not a sum",
                "norm_type", "use norm_type=1 (sinabs' default)")
    if m.ceil_mode:
        return ("sinabs SumPool2d with ceil_mode=True pools partial windows at the edge",
                "ceil_mode", "use ceil_mode=False, or pad the input to whole windows")
    return None


@recogniser("sinabs SumPool2d", _is_sinabs_sum_pool, check=_pool_refusal)
def _sinabs_sum_pool(ctx, name, m, values):
    kernel = tuple(int(k) for k in np.broadcast_to(m.kernel_size, 2))
    stride = kernel if m.stride is None else tuple(int(s) for s in np.broadcast_to(m.stride, 2))
    return ir.SumPool2d(kernel, stride, (0, 0))


def _rec_connect(ctx, m, kind: str) -> ir.Graph:
    """rec_connect exported by polyir.export itself, on the layer's example spikes."""
    from ...fx import export  # at call time: polyir.exporters.fx imports the handler registry
    rec = m.rec_connect
    what = f"sinabs {kind}'s rec_connect ({type(rec).__name__})"
    spikes = torch.as_tensor(ctx.output).to(ctx.input.dtype)
    layer = copy.deepcopy(rec).to(ctx.input.dtype)  # sinabs' spikes are float32; ours are not
    with torch.no_grad():
        try:
            at_rest, out = layer(torch.zeros_like(spikes)), layer(spikes)
        except Exception as exc:
            raise ctx.error(f"{what} fails on the layer's spikes {tuple(spikes.shape)}: {exc}",
                            field="rec_connect",
                            fix="give rec_connect the neuron shape as input and output") from exc
    if tuple(out.shape[1:]) != ctx.input_shape:
        raise ctx.error(f"{what} returns shape {tuple(out.shape[1:])}, which sinabs reshapes to "
                        f"the neuron shape {ctx.input_shape}; polyir has no reshape",
                        field="rec_connect", fix="make rec_connect return the neuron shape")
    if torch.any(at_rest != 0):
        raise ctx.error(f"{what} maps zero spikes to nonzero values (a bias): sinabs adds "
                        "nothing at the first step, polyir's recurrent layer runs on the zero "
                        "spikes of the first step", field="rec_connect",
                        fix="build rec_connect without bias (bias=False)")
    try:
        g = export(layer, spikes, input_elem="real")
    except ir.GraphError as exc:
        raise ctx.error(f"{what} does not export: {exc.reason}", field="rec_connect",
                        fix=exc.fix) from exc
    stateful = [n for n, k in g.nodes.items() if getattr(k, "stateful", False)]
    if stateful:
        raise ctx.error(f"{what} holds the stateful node {stateful[0]!r}; sinabs calls it once "
                        "per step on the spikes, and polyir would delay it again",
                        field="rec_connect", fix="use a stateless rec_connect (Linear, Conv2d, "
                                                 "a Sequential of such layers)")
    return g
