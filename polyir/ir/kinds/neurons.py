"""NIR's neuron kinds (I, IF, LI, LIF, CubaLI, CubaLIF) and the one place their dynamics live.

Between spikes every neuron is a linear ODE. Each kind declares, beside its fields:

- `states`: its state variables in update order, each a `State` naming fields of the kind:
      tau ds/dt = (rest - s) + gain * drive     (a leaky state; rest 0 when it names no field)
          ds/dt = gain * drive                  (an integrator: no tau)
  `drive` is the node's summed input x, or an earlier state (CubaLI's current drives its membrane);
- `spike`: on the spiking kinds, the membrane state, threshold and reset fields (`Spike`);
- the output: the spikes of a spiking kind, else the last state.

Every direction reads these facts: `State.derivative` is the continuous-time right-hand side (the
heyoka ODE), `step_coefficients` the discrete step that torch, C and CUDA all apply, once per time
step dt, state by state in declaration order:

    s_new = a * s + b * x + c  [+ k * d]      (d: the drive state's value before the step)

"euler" is NIR's forward Euler, a drive state entering with its already updated value (CubaLI:
current first, then the membrane from the new current). "exact" is the exact solution over one step
with x held constant (zero-order hold): for a leaky state driven by x, a = exp(-dt/tau),
b = gain (1 - a), c = rest (1 - a); for a membrane v (tau_v, gain g, rest r) driven by a leaky
current i (tau_i, gain g_i, rest r_i) driven by x,
    k = g tau_i (exp(-dt/tau_i) - exp(-dt/tau_v)) / (tau_i - tau_v)   (g dt/tau_v exp(-dt/tau_v) at
        tau_i = tau_v), b = g g_i (1 - a) - k g_i, c = (r + g r_i)(1 - a) - k r_i.
Integrators step exactly under both: a = 1, b = dt gain, c = 0.

Spiking kinds carry polyir extension fields whose defaults are NIR's neuron (so a node at its
defaults is a NIR node, and the file holds no extra datasets):
- `reset_mode`: "v_reset" sets the membrane to v_reset after a spike; "subtract" removes
  v_threshold per spike; "v_reset_after_update" sets it to v_reset too, but a delayed reset
  replaces the membrane after the update of the step that applies it (that step's drive never
  reaches the membrane; the other states integrate as usual: snnTorch's Synaptic "zero");
  without reset_delay it is "v_reset"; "none" never resets (spikes are emitted while the
  membrane stays above threshold: snnTorch's "none"); "subtract_pending_in_test" removes
  v_threshold per spike at once, but its spike test also removes the previous step's spike from
  the membrane (the carried membrane above threshold: snnTorch's "subtract" with
  reset_delay=False, whose delayed reset is subtracted before the test and added back after);
  "none" and "subtract_pending_in_test" take no reset_delay;
- `reset_delay`: False resets in the step that spikes; True applies the reset one step later (the
  spike is read off the carried membrane at the start of the next step: "v_reset" replaces the
  membrane before that step's update, "subtract" removes v_threshold after it,
  "v_reset_after_update" replaces it after it);
- `spike_rule`: "single" emits 0/1; "multi" emits floor(v / v_threshold) spikes per step once the
  threshold test passes (several spikes per step);
- `threshold_compare`: ">" (NIR: spike when v > v_threshold) or ">=";
- `max_spikes`: None (no cap) or N >= 1: with spike_rule "multi", at most N spikes per step
  (min(floor(v / v_threshold), N); a subtracting reset removes as many thresholds as spikes).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..errors import GraphError
from ..fields import Array, Optional, Scalar, to_numpy, param, specs
from ..types import port
from .base import Kind, kind, need_input

DISCRETIZATIONS = ("euler", "exact")
RESET_MODES = ("v_reset", "subtract", "v_reset_after_update", "none",
               "subtract_pending_in_test")
#: reset modes that have no delayed form
UNDELAYED_RESET_MODES = ("none", "subtract_pending_in_test")
SPIKE_RULES = ("single", "multi")
THRESHOLD_COMPARES = (">", ">=")

real = Array("real")


@dataclasses.dataclass(frozen=True)
class State:
    """One state variable: tau ds/dt = (rest - s) + gain * drive, or ds/dt = gain * drive without
    tau. Fields are named by the kind's field names; `drive` is "input" or an earlier state."""

    name: str
    gain: str
    drive: str = "input"
    tau: str | None = None
    rest: str | None = None

    def derivative(self, s, drive, p):
        """ds/dt for state value `s` and drive value `drive`; `p` maps field names to values
        (numbers, arrays or symbolic expressions)."""
        if self.tau is None:
            return p[self.gain] * drive
        pull = (p[self.rest] - s) if self.rest else -s
        return (pull + p[self.gain] * drive) / p[self.tau]

    def input_gain(self, p):
        """d(ds/dt)/d(drive): what a unit of drive adds to the rate of change."""
        return p[self.gain] if self.tau is None else p[self.gain] / p[self.tau]


@dataclasses.dataclass(frozen=True)
class Spike:
    """Which state spikes, against which threshold field, and the reset field."""

    state: str = "v"
    threshold: str = "v_threshold"
    reset: str = "v_reset"


@dataclasses.dataclass
class Coefficients:
    """One state's discrete step: s_new = a s + b x + c (+ k d, d the drive state before the
    step; k is None for a state driven by the input)."""

    a: object
    b: object
    c: object
    k: object = None


def _coefficients(st: State, p, dt, discretization, xp, drive: State | None, dc):
    gain = p[st.gain]
    if st.tau is None:
        if drive is not None:
            raise TypeError(f"an integrator state ({st.name}) must be driven by the input")
        return Coefficients(xp.ones_like(gain), dt * gain, xp.zeros_like(gain))
    tau = p[st.tau]
    rest = p[st.rest] if st.rest else xp.zeros_like(tau)
    if discretization == "euler":
        h = dt / tau
        g = h * gain
        if drive is None:
            return Coefficients(1 - h, g, h * rest)
        return Coefficients(1 - h, g * dc.b, h * rest + g * dc.c, g * dc.a)
    e = xp.exp(-dt / tau)
    one_minus_e = -xp.expm1(-dt / tau)
    if drive is None:
        return Coefficients(e, gain * one_minus_e, rest * one_minus_e)
    if drive.tau is None or drive.drive != "input":
        raise TypeError(f"state {st.name}: an exact step needs a leaky drive fed by the input")
    tau_d, gain_d = p[drive.tau], p[drive.gain]
    rest_d = p[drive.rest] if drive.rest else xp.zeros_like(tau_d)
    diff = tau_d - tau
    same = diff == 0
    safe = xp.where(same, xp.ones_like(diff), diff)
    # tau_d (e_d - e) / (tau_d - tau), written with expm1 so that close time constants lose
    # nothing to cancellation; its limit at tau_d == tau is dt/tau e.
    k = gain * xp.where(same, e * dt / tau, tau_d * e * xp.expm1(dt * diff / (tau_d * tau)) / safe)
    b = gain * gain_d * one_minus_e - k * gain_d
    c = (rest + gain * rest_d) * one_minus_e - k * rest_d
    return Coefficients(e, b, c, k)


def _fill(self, field, like, value):
    if getattr(self, field) is None:
        ref = np.asarray(to_numpy(getattr(self, like)))
        object.__setattr__(self, field, np.full(ref.shape, value, ref.dtype if ref.dtype.kind == "f"
                                                else np.float32))


class Neuron(Kind):
    """Base of the neuron kinds: parameters of one shape (or all 0-d: the shape then comes from
    the input edge; 0-d parameters beside shaped ones are broadcast to that shape)."""

    stateful = True
    states: ClassVar[tuple[State, ...]] = ()
    spike: ClassVar[Spike | None] = None
    #: optional field -> (field whose shape and dtype it takes, fill value) when None is given
    fills: ClassVar[dict] = {}

    def __post_init__(self):
        for field, (like, value) in self.fills.items():
            _fill(self, field, like, value)
        super().__post_init__()
        shape = self.parameter_shape()
        for f in self.parameter_fields():
            a = getattr(self, f)
            if a.shape != shape:  # 0-d beside shaped parameters (validate allows nothing else)
                full = np.array(np.broadcast_to(a, shape))
                full.flags.writeable = False
                object.__setattr__(self, f, full)

    @classmethod
    def parameter_fields(cls) -> tuple[str, ...]:
        """The real-array fields: NIR's fields of this kind."""
        return tuple(n for n, spec in specs(cls) if isinstance(spec, Array))

    @classmethod
    def option_fields(cls) -> tuple[str, ...]:
        """polyir's extension fields (not in NIR); at their defaults the node is NIR's."""
        return tuple(n for n, _ in specs(cls) if n not in cls.parameter_fields())

    @classmethod
    def time_constant_fields(cls) -> tuple[str, ...]:
        return tuple(s.tau for s in cls.states if s.tau)

    @classmethod
    def state_names(cls) -> tuple[str, ...]:
        return tuple(s.name for s in cls.states)

    def parameters(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in self.parameter_fields()}

    def parameter_shape(self) -> tuple:
        shapes = {getattr(self, f).shape for f in self.parameter_fields()} - {()}
        return shapes.pop() if len(shapes) == 1 else ()

    def non_default_options(self) -> dict:
        """Extension fields that differ from NIR's neuron: {field: value}."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {f: getattr(self, f) for f in self.option_fields()
                if getattr(self, f) != defaults[f]}

    def validate(self, name):
        shapes = {f: getattr(self, f).shape for f in self.parameter_fields()}
        shaped = {f: s for f, s in shapes.items() if s != ()}
        first = next(iter(shaped), None)
        for f, s in shaped.items():
            if s != shaped[first]:
                raise GraphError(f"shape {s} differs from {first}'s {shaped[first]}", node=name,
                                 field=f, fix="give every parameter the neuron shape, or a 0-d "
                                              "value that applies to every neuron")

    def in_ports(self):
        shape = self.parameter_shape()
        return {"input": port(shape if shape != () else None)}

    def out_port(self, inputs):
        shape = self.parameter_shape()
        if shape != ():
            return port(shape)
        p = need_input(inputs)
        return None if p is None else port(p.shape)

    @classmethod
    def step_coefficients(cls, params: dict, dt: float, discretization: str,
                          xp=np) -> dict[str, Coefficients]:
        """Per-state discrete step coefficients from the parameters (`params`: field -> array of
        the namespace `xp`, numpy or torch; compute in float64 for agreement across backends)."""
        if discretization not in DISCRETIZATIONS:
            raise GraphError(f"unknown discretization {discretization!r}", field="discretization",
                             fix=f"use one of {DISCRETIZATIONS}")
        out: dict[str, Coefficients] = {}
        by_name = {s.name: s for s in cls.states}
        for st in cls.states:
            drive = by_name.get(st.drive)
            out[st.name] = _coefficients(st, params, dt, discretization, xp, drive,
                                         out.get(st.drive))
        return out

    @classmethod
    def advance(cls, coeffs: dict[str, Coefficients], state: dict, x) -> dict:
        """One linear step of every state (numpy arrays or tensors); the operation order is the
        one the C and CUDA renderers write: ((a s + b x) + c) + k d."""
        new = {}
        for st in cls.states:
            q = coeffs[st.name]
            value = q.a * state[st.name] + q.b * x + q.c
            if q.k is not None:
                value = value + q.k * state[st.drive]
            new[st.name] = value
        return new


def _option(spec, default, allowed=None):
    return dataclasses.field(default=default, kw_only=True,
                             metadata={"spec": spec, "allowed": allowed})


class SpikingNeuron(Neuron):
    """A neuron with a threshold and a reset (see the module docstring for the extension fields,
    declared on the concrete kinds so that their NIR fields come first)."""

    spike: ClassVar[Spike] = Spike()

    def validate(self, name):
        super().validate(name)
        for f in dataclasses.fields(self):
            allowed = f.metadata.get("allowed")
            if allowed is not None and getattr(self, f.name) not in allowed:
                raise GraphError(f"{getattr(self, f.name)!r} is not a {f.name}", node=name,
                                 field=f.name, fix=f"use one of {allowed}")


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class I(Neuron):  # noqa: E742 - NIR's name
    """Integrator: dv/dt = r I, output v."""

    r: np.ndarray = param(real)

    states = (State("v", gain="r"),)


@dataclasses.dataclass(frozen=True, eq=False)
class _SpikeOptions(SpikingNeuron):
    reset_mode: str = _option(Scalar(str), "v_reset", RESET_MODES)
    reset_delay: bool = _option(Scalar(bool), False)
    spike_rule: str = _option(Scalar(str), "single", SPIKE_RULES)
    threshold_compare: str = _option(Scalar(str), ">", THRESHOLD_COMPARES)
    max_spikes: int | None = _option(Optional(Scalar(int)), None)

    def validate(self, name):
        super().validate(name)
        if self.reset_delay and self.reset_mode in UNDELAYED_RESET_MODES:
            raise GraphError(f"reset_mode={self.reset_mode!r} has no delayed form, but "
                             "reset_delay is True", node=name, field="reset_delay",
                             fix="set reset_delay=False")
        if self.max_spikes is None:
            return
        if self.max_spikes < 1:
            raise GraphError(f"max_spikes={self.max_spikes} caps spikes per step below one",
                             node=name, field="max_spikes",
                             fix="use a cap >= 1, or None for no cap")
        if self.spike_rule != "multi":
            raise GraphError("max_spikes caps the spike count of spike_rule='multi'; with "
                             f"spike_rule={self.spike_rule!r} a step has at most one spike",
                             node=name, field="max_spikes",
                             fix="set spike_rule='multi', or leave max_spikes at None")


# at NIR's defaults the file holds no extension datasets, so it stays a NIR file
_SpikeOptions.omit_when_default = _SpikeOptions.option_fields()


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class IF(_SpikeOptions):
    """Integrate-and-fire: dv/dt = r I; spike z = v > v_threshold, then v = v_reset."""

    r: np.ndarray = param(real)
    v_threshold: np.ndarray = param(real)
    v_reset: np.ndarray | None = param(real, default=None)

    states = (State("v", gain="r"),)
    fills = {"v_reset": ("v_threshold", 0.0)}


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class LI(Neuron):
    """Leaky integrator: tau dv/dt = (v_leak - v) + r I, output v."""

    tau: np.ndarray = param(real)
    r: np.ndarray = param(real)
    v_leak: np.ndarray = param(real)

    states = (State("v", gain="r", tau="tau", rest="v_leak"),)


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class LIF(_SpikeOptions):
    """Leaky integrate-and-fire: LI plus spike z = v > v_threshold and reset v = v_reset."""

    tau: np.ndarray = param(real)
    r: np.ndarray = param(real)
    v_leak: np.ndarray = param(real)
    v_threshold: np.ndarray = param(real)
    v_reset: np.ndarray | None = param(real, default=None)

    states = LI.states
    fills = IF.fills


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class CubaLI(Neuron):
    """Current-based LI: tau_syn dI/dt = -I + w_in S; tau_mem dv/dt = (v_leak - v) + r I."""

    tau_syn: np.ndarray = param(real)
    tau_mem: np.ndarray = param(real)
    r: np.ndarray = param(real)
    v_leak: np.ndarray = param(real)
    w_in: np.ndarray | None = param(real, default=None)

    states = (State("i", gain="w_in", tau="tau_syn"),
              State("v", gain="r", drive="i", tau="tau_mem", rest="v_leak"))
    fills = {"w_in": ("v_leak", 1.0)}


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class CubaLIF(_SpikeOptions):
    """Current-based LIF: CubaLI plus spike z = v > v_threshold and reset v = v_reset."""

    tau_syn: np.ndarray = param(real)
    tau_mem: np.ndarray = param(real)
    r: np.ndarray = param(real)
    v_leak: np.ndarray = param(real)
    v_threshold: np.ndarray = param(real)
    v_reset: np.ndarray | None = param(real, default=None)
    w_in: np.ndarray | None = param(real, default=None)

    states = CubaLI.states
    fills = {**IF.fills, **CubaLI.fills}


#: the neuron kinds, by name
NEURONS = {cls.__name__: cls for cls in (I, IF, LI, LIF, CubaLI, CubaLIF)}
