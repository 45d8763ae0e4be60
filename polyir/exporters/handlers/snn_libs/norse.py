"""Export handlers for Norse's neurons, recognised by class name and attributes.

Norse (1.1) steps every neuron by forward Euler at the module's dt; `h = dt * tau_inv` is the
fraction of a time constant per step, computed as Norse does (in the dtype of the parameter), and
the exported time constant is tau = dt / h, with r = 1. Each neuron comes as a cell
(`forward(x, state) -> (out, state)`, one step) and most as a time-loop module (`LIF`, `LI`,
`IAF`, `LIFRecurrent`: the same step looped over the first axis of x inside forward); both export
as ONE time step: export the time-loop modules with one step of input (x[0]) and run the graph
over the sequence (`run(x)`, time first as in Norse).

- `LIFBoxCell`: v <- v + h (v_leak - v + x), spike when v > v_th, then reset_value (to v_reset)
  or reset_subtract (v - v_th): NIR's LIF, reset_mode "v_reset" or "subtract".
- `LIFCell` / `LIF`: the current jumps first, i <- i + x, then v <- v + h_mem (v_leak - v + i)
  from the new current, then i decays by (1 - h_syn): a CubaLIF whose current takes the whole
  input (w_in = tau_syn / dt), current first, then the membrane.
- `LICell` / `LI` and `LIBoxCell`: the same without threshold, the output is the membrane: CubaLI
  and LI. `LILinearCell` is an LICell fed by its own `input_weights` (a Linear, no bias).
- `IAFCell` / `IAF`: v <- v + x, spike when v > v_th, reset to v_reset: IF with r = 1 / dt.
- `LIFRecurrentCell` / `LIFRecurrent`: the current jumps by input_weights x + recurrent_weights z
  with z the previous step's spikes: a fragment input Linear -> CubaLIF -> recurrent Linear ->
  CubaLIF, the edge leaving the neuron read one step late. autapses=False only zeroes the
  diagonal of recurrent_weights, which the exported Linear keeps.

`SequentialState` and `Lift` export as their modules applied to one time step (a stateful
module's value is its output), each by its own handler, inlined.

Norse starts a membrane at v_leak (IAF: at v_reset), polyir at 0: the exported membrane is
Norse's minus that start, so threshold and reset are shifted by it, and a leaky integrator's
output gets it back by a ChannelAffine (weight 1, bias v_leak). The spike methods ("super",
"heaviside", "triangle", ...) differ only in the surrogate gradient: every forward is the
Heaviside step v - v_th > 0. Neurons with states polyir has no kind for (adaptation, exponential
or quadratic membranes, refractory counters, conductances, compartments) are refused by name,
as are options polyir cannot express, before the example run (`check=`; Norse's own forward
fails with some). The example run steps a time-loop module once (`example_step`).
"""
from __future__ import annotations

import numpy as np
from torch import nn

from .... import ir
from ....ir.errors import GraphError
from .. import one_step, recogniser, refusal_of
from .common import set_euler

#: threshold methods whose forward is the Heaviside step (they differ in the surrogate only)
_HEAVISIDE = ("super", "heaviside", "triangle", "tanh", "circ", "heavi_erfc")
#: LIFBoxCell reset_method name -> polyir reset_mode
_BOX_RESETS = {"reset_value": "v_reset", "reset_subtract": "subtract"}
_EXPORTED = ("polyir exports Norse's LIFCell, LIFBoxCell, LICell, LIBoxCell, LILinearCell, "
             "IAFCell, LIFRecurrentCell and the time-loop modules LIF, LI, IAF, LIFRecurrent (also "
             "inside SequentialState or Lift)")
#: Norse neuron families polyir has no kind for, and what they have that polyir's neurons lack
_LACKS = {
    "LIFAdEx": "an adaptation current driven by the membrane and the spikes, and an exponential "
               "spike-initiation term",
    "LIFAdExRefrac": "an adaptation current, an exponential spike-initiation term and a "
                     "refractory counter",
    "LIFEx": "an exponential spike-initiation term (a nonlinear membrane)",
    "Izhikevich": "a quadratic membrane with a recovery variable",
    "LSNN": "an adaptive threshold (a second state that grows with every spike)",
    "CobaLIF": "conductance-based synapses (the input scales with the distance of the membrane "
               "to reversal potentials)",
    "LIFRefrac": "a refractory counter that holds the membrane after a spike",
    "LIFMC": "several coupled compartments per neuron",
    "LIFMCRefrac": "several coupled compartments per neuron and a refractory counter",
    "LIFCorrelation": "correlation traces of input and output spikes",
}


def _family(m) -> str:
    """The class name without Norse's RecurrentCell / Recurrent / Cell suffix."""
    name = type(m).__name__
    for suffix in ("RecurrentCell", "Recurrent", "Cell"):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def _from_norse(m) -> bool:
    return type(m).__module__.startswith("norse.") and hasattr(m, "p") and hasattr(m, "dt")


def _full(ctx, value, shape) -> np.ndarray:
    """A Norse parameter (0-d or per neuron) broadcast to the neuron shape, in float64."""
    a = ctx.array(value, np.float64)
    try:
        return np.ascontiguousarray(np.broadcast_to(a, shape))
    except ValueError:
        raise ctx.error(f"parameter of shape {a.shape} does not broadcast to the neuron shape "
                        f"{shape}", field="p",
                        fix="give it the neuron shape, or one value") from None


def _tau(ctx, m, field: str, shape) -> np.ndarray:
    """dt / h, h = dt * tau_inv as Norse computes it (in the parameter's dtype)."""
    h = _full(ctx, m.dt * getattr(m.p, field), shape)
    if not np.all(h > 0):
        raise ctx.error(f"{field} = {getattr(m.p, field)} is not positive: the state never "
                        "decays, so it has no time constant", field=field,
                        fix="give every neuron a positive " + field
                            + (", or use IAFCell for a membrane without leak"
                               if field == "tau_mem_inv" else ""))
    return float(m.dt) / h


def _cast(ctx, fields: dict) -> dict:
    return {k: v.astype(ctx.float_dtype) for k, v in fields.items()}


def _spiking(ctx, m, shape, start) -> dict:
    """Threshold and reset of a membrane that polyir starts at 0 and Norse at `start`."""
    return {"v_threshold": _full(ctx, m.p.v_th, shape) - start,
            "v_reset": _full(ctx, m.p.v_reset, shape) - start}


def _lif(ctx, m, shape):
    v_leak = _full(ctx, m.p.v_leak, shape)
    tau_syn = _tau(ctx, m, "tau_syn_inv", shape)
    fields = {"tau_syn": tau_syn, "tau_mem": _tau(ctx, m, "tau_mem_inv", shape),
              "r": np.ones(shape), "v_leak": np.zeros(shape), **_spiking(ctx, m, shape, v_leak),
              "w_in": tau_syn / float(m.dt)}
    return ir.CubaLIF(**_cast(ctx, fields)), None


def _reset_name(p) -> str:
    return getattr(p.reset_method, "__name__", type(p.reset_method).__name__)


def _lif_box(ctx, m, shape):
    fields = {"tau": _tau(ctx, m, "tau_mem_inv", shape), "r": np.ones(shape),
              "v_leak": np.zeros(shape),
              **_spiking(ctx, m, shape, _full(ctx, m.p.v_leak, shape))}
    return ir.LIF(**_cast(ctx, fields), reset_mode=_BOX_RESETS[_reset_name(m.p)]), None


def _li(ctx, m, shape):
    tau_syn = _tau(ctx, m, "tau_syn_inv", shape)
    fields = {"tau_syn": tau_syn, "tau_mem": _tau(ctx, m, "tau_mem_inv", shape),
              "r": np.ones(shape), "v_leak": np.zeros(shape), "w_in": tau_syn / float(m.dt)}
    return ir.CubaLI(**_cast(ctx, fields)), _rest(ctx, m, shape)


def _li_box(ctx, m, shape):
    fields = {"tau": _tau(ctx, m, "tau_mem_inv", shape), "r": np.ones(shape),
              "v_leak": np.zeros(shape)}
    return ir.LI(**_cast(ctx, fields)), _rest(ctx, m, shape)


def _iaf(ctx, m, shape):
    start = _full(ctx, m.p.v_reset, shape)
    fields = {"r": np.full(shape, 1 / float(m.dt)), **_spiking(ctx, m, shape, start)}
    return ir.IF(**_cast(ctx, fields)), None


def _rest(ctx, m, shape):
    """The ChannelAffine that adds v_leak back to a leaky integrator's output (None at 0)."""
    v_leak = _full(ctx, m.p.v_leak, shape)
    if not np.any(v_leak):
        return None
    per_channel = v_leak.reshape(shape[0], -1)
    if np.any(per_channel != per_channel[:, :1]):
        raise ctx.error("Norse starts the membrane at v_leak, polyir at 0, and adds v_leak back "
                        "per channel; this v_leak varies inside a channel", field="v_leak",
                        fix="give v_leak one value per channel (axis 0), or 0")
    bias = per_channel[:, 0]
    return ir.ChannelAffine(np.ones_like(bias, dtype=ctx.float_dtype),
                            bias.astype(ctx.float_dtype))


#: Norse family -> builder(ctx, module, neuron shape) -> (neuron, ChannelAffine of v_leak | None)
_BUILDERS = {"LIF": _lif, "LIFBox": _lif_box, "LI": _li, "LILinear": _li, "LIBox": _li_box,
             "IAF": _iaf}


def _is_neuron(m) -> bool:
    return _from_norse(m) and (_family(m) in _BUILDERS or _family(m) in _LACKS)


def _refusal(m):
    """(message, field, fix) for what polyir cannot express, from the attributes alone (before
    the example run: Norse's own forward fails with some of them)."""
    cls, family = type(m).__name__, _family(m)
    if family in _LACKS:
        return (f"Norse {cls} has {_LACKS[family]}; polyir's neurons (IF, LIF, CubaLIF and the "
                "leaky integrators LI, CubaLI) have no such state", "type",
                f"{_EXPORTED}: train with one of them, or keep {cls} outside the exported part "
                "of the model")
    if getattr(m, "return_hidden", False):
        return (f"Norse {cls} with return_hidden=True returns every layer's output; a polyir "
                "graph fragment has one output", "return_hidden", "use return_hidden=False")
    p = getattr(m, "p", None)
    method = getattr(p, "method", "super")
    if method not in _HEAVISIDE:
        return (f"Norse {cls} with method={method!r}: its forward is not the Heaviside step of "
                "the other methods", "method", f"use one of {_HEAVISIDE}")
    if family != "LIFBox":
        return None
    reset = _reset_name(p)
    if reset not in _BOX_RESETS:
        return (f"Norse {cls} with reset_method {reset}: polyir resets to v_reset or "
                "subtracts the threshold", "reset_method", f"use one of {sorted(_BOX_RESETS)}")
    if reset == "reset_subtract" and np.any(np.asarray(p.v_leak) != 0):
        return (f"Norse {cls} with reset_subtract and v_leak != 0: polyir starts the membrane "
                "at 0 and Norse at v_leak, and a subtracting reset does not survive moving the "
                "rest to 0", "v_leak", "use v_leak=0 with reset_subtract, or reset_value")
    return None


def _one_step(m, x, *state):
    """What the example run calls instead of `m`: a time-loop module (LIF, LI, IAF,
    LIFRecurrent) on x as a sequence of one step; a cell as it is."""
    if type(m).__name__.endswith("Cell"):
        return m(x, *state)
    out, new_state = m(x.unsqueeze(0), *state)
    return out[0], new_state


@recogniser("norse.LIF/LIFBox/LI/LIBox/LILinear/IAF(+Cell), LIFRecurrent(Cell)", _is_neuron,
            returns_state=True, check=_refusal, example_step=_one_step)
def _norse_neuron(ctx, name, m, values):
    set_euler(ctx, float(m.dt))
    weights = getattr(m, "input_weights", None)  # LILinearCell and the recurrent modules
    shape = (int(m.hidden_size),) if weights is not None else ctx.input_shape
    neuron, rest = _BUILDERS[_family(m)](ctx, m, shape)
    layers = [("input_weights", ir.Linear(ctx.array(weights)))] if weights is not None else []
    layers += [("neuron", neuron)] + ([("rest", rest)] if rest is not None else [])
    recurrent = getattr(m, "recurrent_weights", None)
    if len(layers) == 1 and recurrent is None:
        return neuron
    return _fragment(ctx, shape, layers,
                     None if recurrent is None else ir.Linear(ctx.array(recurrent)))


def _fragment(ctx, shape, layers, recurrent) -> ir.Graph:
    """input -> layers, one after the other -> output; a recurrent layer takes the neuron's
    spikes and adds into its input, on an edge read one step late."""
    g = ir.Graph()
    g.add("input", ir.Input(ctx.input_shape))
    previous = "input"
    for layer, node in layers:
        g.add(layer, node)
        g.connect(previous, layer)
        previous = layer
    if recurrent is not None:
        g.add("recurrent_weights", recurrent)
        g.connect("neuron", "recurrent_weights")
        g.connect("recurrent_weights", "neuron")
    g.add("output", ir.Output(shape))
    g.connect(previous, "output")
    return g


def _is_sequential(m) -> bool:
    return type(m).__name__ == "SequentialState" and type(m).__module__.startswith("norse.")


def _is_lift(m) -> bool:  # returns (out, state) only when the lifted module does
    return type(m).__name__ == "Lift" and type(m).__module__.startswith("norse.")


class _OneStep(nn.Module):
    """A SequentialState's (or a Lift's) modules applied to one time step, under their own
    names; a stateful module's value is the first element of its (out, state)."""

    def __init__(self, named: list, stateful: list):
        super().__init__()
        for key, module in named:
            self.add_module(key, module)
        self.stateful = list(stateful)

    def forward(self, x):
        for module, stateful in zip(self.children(), self.stateful):
            x = module(x)[0] if stateful else module(x)
        return x


def _container_refusal(m):
    """The first refusal among a SequentialState's (or a Lift's) modules, named, decided before
    the example run of the container (Norse's forward may fail with what is refused)."""
    own = _refusal(m)
    if own is not None:
        return own
    for key, module in m.named_children():
        refusal = refusal_of(module)
        if refusal is not None:
            message, field, fix = refusal
            return f"{type(m).__name__} module {key!r}: {message}", field, fix
    return None


def _container_step(m, x, state=None):
    """One time step of a SequentialState (-> (out, states)) or a Lift, module by module."""
    if type(m).__name__ == "Lift":
        return one_step(m.lifted_module, x)
    states = []
    for module, stateful in zip(m.children(), m.stateful_layers):
        x, s = one_step(module, x) if stateful else (one_step(module, x), None)
        states.append(s)
    return x, states


@recogniser("norse.Lift", _is_lift, check=_container_refusal, example_step=_container_step)
@recogniser("norse.SequentialState", _is_sequential, returns_state=True,
            check=_container_refusal, example_step=_container_step)
def _norse_container(ctx, name, m, values):
    """The modules inside, exported as one time step and inlined (their state stays theirs)."""
    from ...fx import export  # the exporter itself: a container is a small model of its own
    if type(m).__name__ == "Lift":
        named, stateful = [("lifted_module", m.lifted_module)], [m.is_stateful]
    else:
        named, stateful = list(m.named_children()), m.stateful_layers
    try:
        g = export(_OneStep(named, stateful), ctx.input)
    except GraphError as exc:  # export() blames _OneStep's loop over its modules: not a time loop
        cause = exc.__cause__
        raise (cause if isinstance(cause, GraphError) else exc) from None
    for key in ("dt", "discretization"):
        if key in g.metadata:
            ctx.set_metadata(key, g.metadata[key])
    return g
