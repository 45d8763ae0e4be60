"""Duck-typed export handlers for the neurons of snnTorch, Norse and sinabs, straight from their
torch modules (no NIR file in between); no library is imported: a module is recognised by its
class name and attributes. docs/spiking.md says what each library computes.

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
Norse (1.1) `LIFBoxCell` / `LIFCell`: forward(x, state) -> (z, state); one Euler step of NIR's
  LIF / CubaLIF at the cell's dt with tau = 1 / tau_inv, r = 1, reset to v_reset at once;
  LIFCell adds the whole input to the current (w_in = tau_syn / dt, see the NIR conventions).
sinabs (3.1) `IAF` / `LIF` / `IAFSqueeze` / `LIFSqueeze`: forward((batch, time, ...)) loops over
  time inside and keeps its state; the exported node is one of those steps (registered with
  returns_state=False: the module returns spikes only). Per step, at dt = 1: (i <- a_syn (i + x)),
  v <- a v + (1 - a) i (norm_input) or + i, then spike_fn and reset_fn; Euler with
  tau = 1 / (1 - a) is that step.
"""
from __future__ import annotations

import numpy as np

from ... import ir
from . import recogniser
from .polyir_nn import _full
from .torch_nn import _conv2d, _linear

_SNNTORCH_RESETS = {"subtract": "subtract", "zero": "v_reset", "none": "none"}
#: the snnTorch neurons whose delayed 'zero' reset zeroes the membrane after the step's update
_ZERO_AFTER_UPDATE = ("Synaptic", "RLeaky", "RSynaptic")


def _named(m, name: str, *attrs) -> bool:
    return type(m).__name__ == name and all(hasattr(m, a) for a in attrs)


_SNNTORCH_NEURONS = ("Leaky", "Synaptic", "RLeaky", "RSynaptic")


def _is_snntorch_neuron(m) -> bool:
    return (type(m).__name__ in _SNNTORCH_NEURONS
            and all(hasattr(m, a) for a in ("beta", "threshold", "reset_mechanism", "init_hidden"))
            and type(m).__module__.startswith("snntorch"))


def _decays(ctx, decay) -> np.ndarray:
    """The decay per step, clamped to [0, 1] as snnTorch does."""
    return np.clip(ctx.array(decay).astype(np.float64), 0, 1)


def _one_minus_inverse(ctx, decay, field: str, fix: str):
    """1 / (1 - decay) per element (the Euler time constant at dt = 1 of that decay); a decay
    of 1 (no leak) has none."""
    d = _decays(ctx, decay)
    if np.any(d == 1):
        raise ctx.error(f"{field} = 1 (a state that never decays) has no time constant",
                        field=field, fix=fix)
    return _full(ctx, (1 / (1 - d)).astype(ctx.float_dtype))


@recogniser("snntorch.Leaky/Synaptic/RLeaky/RSynaptic", _is_snntorch_neuron,
            returns_state=True)
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
    threshold = _full(ctx, m.threshold)
    zeros = np.zeros_like(threshold)
    options = {"reset_mode": _SNNTORCH_RESETS[m.reset_mechanism],
               "reset_delay": bool(getattr(m, "reset_delay", True))}
    if m.reset_mechanism == "zero" and options["reset_delay"] and kind in _ZERO_AFTER_UPDATE:
        options["reset_mode"] = "v_reset_after_update"
    if m.reset_mechanism == "subtract" and not options["reset_delay"]:
        options["reset_mode"] = "subtract_pending_in_test"
    if m.reset_mechanism == "none":  # nothing to delay
        options["reset_delay"] = False
    if kind in ("Leaky", "RLeaky") and np.all(_decays(ctx, m.beta) == 1):  # mem <- mem + x
        neuron = ir.IF(np.ones_like(threshold), threshold, zeros, **options)
    elif kind in ("Leaky", "RLeaky"):
        tau = _one_minus_inverse(ctx, m.beta, "beta", "use beta < 1 for every neuron, or 1 for "
                                                      "all of them (integrate-and-fire)")
        neuron = ir.LIF(tau, tau.copy(), zeros, threshold, zeros.copy(), **options)
    else:  # Synaptic: i <- alpha i + x, then mem <- beta mem + i with the new current
        fix = "use decays below 1"
        tau, tau_syn = (_one_minus_inverse(ctx, getattr(m, f), f, fix) for f in ("beta", "alpha"))
        neuron = ir.CubaLIF(tau_syn, tau, tau.copy(), zeros, threshold, zeros.copy(),
                            w_in=tau_syn.copy(), **options)
    if kind in ("Leaky", "Synaptic"):
        return neuron
    return _with_recurrence(ctx, name, m, neuron)


def _with_recurrence(ctx, name, m, neuron) -> ir.Graph:
    """neuron -> recurrent layer -> neuron, the layer adding into the neuron's input."""
    if not m.all_to_all:
        layer = ir.Scale(_full(ctx, m.V))
    elif type(m.recurrent).__name__ == "Linear":
        layer = _linear(ctx, name, m.recurrent, {})
    else:  # all_to_all with conv2d_channels and kernel_size: a same-size Conv2d
        layer = _conv2d(ctx, name, m.recurrent, {})
    g = ir.Graph()
    g.add("input", ir.Input(ctx.input_shape))
    g.add("neuron", neuron)
    g.add("recurrent", layer)
    g.add("output", ir.Output(ctx.input_shape))
    g.connect("input", "neuron")
    g.connect("neuron", "recurrent")
    g.connect("recurrent", "neuron")
    g.connect("neuron", "output")
    return g


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
    ctx.set_metadata("dt", 1.0)
    ctx.set_metadata("discretization", "euler")
    threshold = _full(ctx, m.spike_threshold)
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
    tau_mem = _one_minus_inverse(ctx, m.alpha_mem_calculated, "tau_mem", fix)
    r = np.ones_like(tau_mem) if m.norm_input else tau_mem.copy()
    if alpha_syn is None:
        return ir.LIF(tau_mem, r, zeros, threshold, zeros.copy(), **options)
    tau_syn = _one_minus_inverse(ctx, alpha_syn, "tau_syn", fix)
    w_in = (_full(ctx, alpha_syn).astype(np.float64) * tau_syn).astype(ctx.float_dtype)
    return ir.CubaLIF(tau_syn, tau_mem, r, zeros, threshold, zeros.copy(), w_in=w_in, **options)
