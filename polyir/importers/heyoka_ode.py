"""Graph -> heyoka ODE system for leaky-integrator (neuron) graphs.

`to_heyoka_ode(graph)` turns a graph of LI / CubaLI / I / LIF / CubaLIF / IF neurons and static
Affine / Linear / Scale / Activation / Flatten nodes into an ODE system for
`heyoka.taylor_adaptive`, in continuous time (NIR's equations, no discretisation): the graph's
inputs are runtime parameters `par[0..n_in-1]`, held constant over each step of an input sequence.
Spikes are terminal events: the integrator stops at the exact crossing time v = v_threshold, a
callback resets v to v_reset and adds the spike's charge to the neurons it feeds, and integration
goes on. A graph with no neuron at all is read as a right-hand side: dx/dt = graph(x). The static
nodes' expressions come from `polyir.importers.heyoka`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .. import ir
from .heyoka import HeyokaBuilder, _hy, _input_size, _input_vars, _obj

_NEURONS = (ir.I, ir.IF, ir.LI, ir.LIF, ir.CubaLI, ir.CubaLIF)
_SPIKING = (ir.IF, ir.LIF, ir.CubaLIF)

@dataclasses.dataclass
class _Neuron:
    name: str
    node: Any
    v: list            # membrane state variables
    i: list | None     # synaptic current state variables (Cuba kinds)
    offset: int        # index of v[0] in the state vector
    i_offset: int | None


class _Signal:
    """A value in the ODE graph: expressions plus, per spiking neuron, the linear map from its
    spikes (charges) to this value (flat (size, n_spiking) matrices)."""

    def __init__(self, ex: np.ndarray, spk: dict | None = None):
        self.ex, self.spk = ex, spk or {}

    def __add__(self, other):
        spk = dict(self.spk)
        for k, m in other.spk.items():
            spk[k] = spk[k] + m if k in spk else m
        return _Signal(self.ex + other.ex, spk)


_LINEAR_SPIKE_MAP = {
    ir.Affine: lambda node, m: np.asarray(node.weight, np.float64) @ m,
    ir.Linear: lambda node, m: np.asarray(node.weight, np.float64) @ m,
    ir.Scale: lambda node, m: np.asarray(node.scale, np.float64).reshape(-1, 1) * m,
    ir.Flatten: lambda node, m: m,
    ir.Output: lambda node, m: m,
}


class HeyokaODE:
    """An ODE system built from a graph, ready for `heyoka.taylor_adaptive`.

    Attributes: `sys` (list of (variable, right-hand side)), `state_vars`, `state0` (initial
    state, zeros), `n_inputs` (inputs are `par[0..n_inputs-1]`, all Input nodes flattened in
    order), `outputs` (expressions of the Output nodes' elements, in state and input), `neurons`
    (name -> state offsets), `spiking` (neurons with spike events), `spike_charge` (the charge
    one spike carries into the neurons it feeds; None: the step dt of `run`), `dt` (the graph's
    metadata dt, if any).

    `integrator(...)` builds a `taylor_adaptive` with the spike events; `run(inputs, dt)`
    integrates a (T, n_in) input sequence held constant over each step and returns an
    `OdeRun(t, states, outputs, spikes)`.
    """

    def __init__(self, sys, state_vars, n_inputs, outputs, neurons, spiking, spike_maps,
                 rhs_mode=False, spike_charge=None, dt=None):
        self.sys, self.state_vars, self.n_inputs = sys, state_vars, n_inputs
        self.outputs, self.neurons, self.spiking = outputs, neurons, spiking
        self.spike_maps = spike_maps          # source -> {target: (state offsets, jump matrix)}
        self.out_spike_maps: dict = {}        # source -> (n_out, n_source) spike-count map
        self.rhs_mode, self.spike_charge, self.dt = rhs_mode, spike_charge, dt
        self.state0 = np.zeros(len(state_vars))
        self.record: list = []                # spikes of the current run: (time, neuron, index)
        self.charge = 1.0                     # charge delivered per spike in the current run
        self._out_cf = None
        self._ta: dict = {}

    def __repr__(self):
        return (f"HeyokaODE({len(self.state_vars)} states, {self.n_inputs} inputs, "
                f"{len(self.outputs)} outputs, {sum(len(n.v) for n in self.spiking)} spiking)")

    def describe(self) -> str:
        """The system as text: one line per equation, event and output."""
        lines = [f"d{v}/dt = {rhs}" for v, rhs in self.sys]
        for n in self.spiking:
            thr = np.asarray(n.node.v_threshold).tolist()
            reset = np.asarray(n.node.v_reset).tolist()
            lines.append(f"event: {n.name}.v[i] crosses v_threshold {thr} upwards -> spike, "
                         f"v[i] = v_reset {reset}")
        lines += [f"output[{k}] = {e}" for k, e in enumerate(self.outputs)]
        if self.n_inputs:
            lines.append(f"inputs: par[0..{self.n_inputs - 1}] (constant over each step)")
        return "\n".join(lines)

    def _thresholds(self) -> dict:
        return {n.name: (n.offset, np.asarray(n.node.v_threshold, np.float64).ravel(),
                         np.asarray(n.node.v_reset, np.float64).ravel()) for n in self.spiking}

    def integrator(self, state0=None, *, tol: float = 0.0, compact_mode: bool = False,
                   **kwargs):
        """A new `heyoka.taylor_adaptive` for the system (inputs as pars, initially 0). Spikes
        are terminal events whose callback appends (time, neuron, index) to `self.record`,
        resets v and adds `self.charge` times the weights to the neurons the spike feeds."""
        hy = _hy()
        state0 = self.state0 if state0 is None else np.asarray(state0, np.float64)
        thresholds = self._thresholds()
        events = []
        for n in self.spiking:
            _, thr, _ = thresholds[n.name]
            for k in range(len(n.v)):
                events.append(hy.t_event(n.v[k] - float(thr[k]),
                                         callback=_SpikeCallback(self, n.name, k, thresholds),
                                         direction=hy.event_direction.positive))
        return hy.taylor_adaptive(self.sys, [float(v) for v in state0],
                                  pars=[0.0] * self.n_inputs, tol=tol, compact_mode=compact_mode,
                                  t_events=events, **kwargs)

    def output_function(self):
        """cfunc: states (as variables), inputs (as pars) -> outputs."""
        if self._out_cf is None:
            self._out_cf = _hy().cfunc(self.outputs, self.state_vars)
        return self._out_cf

    def run(self, inputs, dt: float | None = None, state0=None, **kwargs) -> "OdeRun":
        """Integrate a (T, n_in) input sequence (or (T, batch, n_in): each batch element in
        turn), row k held constant on [k dt, (k+1) dt]. Returns the states and outputs at the
        end of each step ((T, [batch,] n_state), (T, [batch,] n_out)) and the exact spike times.
        A spiking output element at step k counts the spikes in that step. The integrator is
        compiled once per option set and reused."""
        if self.rhs_mode:
            raise ir.GraphError("this system is dx/dt = graph(x): it takes no input sequence",
                                field="inputs", fix="use integrator(state0).propagate_grid(times)")
        dt = self.dt if dt is None else dt
        if dt is None:
            raise ir.GraphError("no time step: the graph's metadata has no 'dt'", field="dt",
                                fix="pass dt=...")
        dt = float(dt)
        x = np.asarray(inputs, np.float64)
        if x.ndim == 1 and self.n_inputs == 1:
            x = x[:, None]
        if x.ndim == 3:
            runs = [self.run(x[:, j], dt, state0, **kwargs) for j in range(x.shape[1])]
            return OdeRun(runs[0].t, np.stack([r.states for r in runs], 1),
                          np.stack([r.outputs for r in runs], 1), [r.spikes for r in runs])
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.n_inputs:
            raise ir.GraphError(f"input sequence has {x.shape[1]} columns, the graph takes "
                                f"{self.n_inputs}", field="inputs", fix="pass (T, n_in)")
        key = tuple(sorted(kwargs.items()))
        if key not in self._ta:
            self._ta[key] = self.integrator(**kwargs)
        ta = self._ta[key]
        ta.time = 0.0
        ta.state[:] = self.state0 if state0 is None else np.asarray(state0, np.float64)
        if self.spiking:
            ta.reset_cooldowns()
        self.record = []
        self.charge = float(dt if self.spike_charge is None else self.spike_charge)
        limit = _hy().taylor_outcome.time_limit
        T = x.shape[0]
        states = np.empty((T, len(self.state_vars)))
        for k in range(T):
            ta.pars[:] = x[k]
            outcome = ta.propagate_until((k + 1) * dt)[0]
            if outcome != limit:
                raise RuntimeError(f"heyoka stopped at t={ta.time} with {outcome}")
            states[k] = ta.state
        outs = np.zeros((T, len(self.outputs)))
        if self.outputs:
            cf = self.output_function()
            pars = np.ascontiguousarray(x.T[:cf.nparams]) if cf.nparams else None
            outs[:] = cf(np.ascontiguousarray(states.T), pars=pars).T
        for name, m in self.out_spike_maps.items():
            counts = np.zeros((T, m.shape[1]))
            for t, src, idx in self.record:
                if src == name:
                    counts[min(int(t / dt), T - 1), idx] += 1
            outs += counts @ m.T
        return OdeRun(np.arange(1, T + 1) * dt, states, outs, list(self.record))


@dataclasses.dataclass
class OdeRun:
    """Result of `HeyokaODE.run`: step end times (T,), states (T, n_state), outputs (T, n_out),
    spikes [(time, neuron node, index)] in time order."""

    t: np.ndarray
    states: np.ndarray
    outputs: np.ndarray
    spikes: list

    def spike_times(self, neuron: str | None = None, index: int = 0) -> np.ndarray:
        return np.array([t for t, n, i in self.spikes
                         if (neuron is None or n == neuron) and i == index])


class _SpikeCallback:
    """Terminal-event callback: record the spike, reset v, deliver the charge to the neurons the
    spiking one feeds; a neuron pushed over its threshold by that charge spikes at once."""

    def __init__(self, ode, name, index, thresholds):
        self.ode, self.name, self.index, self.thresholds = ode, name, index, thresholds

    def __deepcopy__(self, memo):
        # heyoka deep-copies callbacks into the integrator; keep this one bound to its ODE.
        return self

    def __call__(self, ta, d_sgn) -> bool:
        st = ta.state
        ode = self.ode
        queue = [(self.name, self.index)]
        fired = 0
        while queue:
            name, k = queue.pop(0)
            off, thr, reset = self.thresholds[name]
            ode.record.append((float(ta.time), name, k))
            st[off + k] = reset[k]
            fired += 1
            if fired > 100000:
                raise RuntimeError(f"spike cascade from {self.name!r} does not end")
            for target, (offsets, jumps) in ode.spike_maps.get(name, {}).items():
                st[offsets] += ode.charge * jumps[:, k]
                if target in self.thresholds:
                    t_off, t_thr, _ = self.thresholds[target]
                    for j in np.nonzero(st[t_off:t_off + len(t_thr)] > t_thr)[0]:
                        if (target, int(j)) not in queue:
                            queue.append((target, int(j)))
        return True


def _dt_free_check(graph):
    for n, node in graph.nodes.items():
        if isinstance(node, ir.Delay):
            raise ir.GraphError("Delay has no ODE form here (it would need a delay equation)",
                                node=n, field="type", fix="remove the Delay")


def to_heyoka_ode(graph: ir.Graph, spike_charge: float | None = None, mode: str = "eval",
                  ffnn: bool = True) -> HeyokaODE:
    """Leaky-integrator graph -> HeyokaODE (see its docstring).

    Neurons follow NIR's continuous-time equations (LI: tau dv/dt = v_leak - v + r I; CubaLI adds
    tau_syn dI/dt = -I + w_in S; I: dv/dt = r I), initial state 0. LIF / CubaLIF / IF spike when v
    crosses v_threshold upwards (a heyoka terminal event: exact time), v is reset to v_reset, and
    each spike delivers `spike_charge` (default: the step dt of `run`, what a 0/1 spike held for
    one step delivers in a discrete simulator) times the weights of the linear path (Affine /
    Linear / Scale / Flatten) to the neurons it feeds. A spike reaching a nonlinear node is an
    error. A graph with no neurons is read as dx/dt = graph(x) (inputs = state, needs
    n_in == n_out).
    """
    hy = _hy()
    b = HeyokaBuilder(graph, mode=mode, ffnn=ffnn)
    g = b.graph
    _dt_free_check(g)
    neurons = [n for n in b.order if isinstance(g.nodes[n], _NEURONS)]
    other_state = [n for n in b.order if g.nodes[n].stateful and n not in neurons]
    if other_state:
        n = other_state[0]
        raise ir.GraphError(f"{type(g.nodes[n]).__name__} has no ODE form", node=n, field="type",
                            fix="use LI / CubaLI / I / LIF / CubaLIF / IF neurons")

    if not neurons:  # right-hand side mode
        feeds, flat = _input_vars(b, None)
        if len(flat) == 1:
            flat = [hy.make_vars("x0")]
        env = b.evaluate(feeds)
        rhs = [e for o in b.output_names for e in np.asarray(env[o]).ravel()]
        if len(rhs) != len(flat):
            raise ir.GraphError(f"a graph with no neurons is read as dx/dt = graph(x), but it "
                                f"maps {len(flat)} inputs to {len(rhs)} outputs", field="nodes",
                                fix="give it as many outputs as inputs, or add neurons")
        return HeyokaODE(list(zip(flat, rhs)), flat, 0, list(flat), {}, [], {}, rhs_mode=True)

    # inputs are parameters
    sizes = [_input_size(g, n) for n in b.input_names]
    n_in = sum(sizes)
    feeds, k = {}, 0
    for n, s in zip(b.input_names, sizes):
        feeds[n] = _Signal(_obj([hy.par[k + i] for i in range(s)], g.nodes[n].shape))
        k += s

    # state variables per neuron
    state_vars: list = []
    info: dict[str, _Neuron] = {}
    for n in neurons:
        node = g.nodes[n]
        shape = np.asarray(node.r).shape
        size = int(np.prod(shape, dtype=np.int64))
        i_vars, i_off = None, None
        if isinstance(node, (ir.CubaLI, ir.CubaLIF)):
            i_off = len(state_vars)
            i_vars = [hy.expression(f"{n}.i{j}") for j in range(size)]
            state_vars += i_vars
        off = len(state_vars)
        v_vars = [hy.expression(f"{n}.v{j}") for j in range(size)]
        state_vars += v_vars
        info[n] = _Neuron(n, node, v_vars, i_vars, off, i_off)

    env: dict[str, Any] = dict(feeds)
    for n in neurons:
        node = g.nodes[n]
        shape = np.asarray(node.r).shape
        if isinstance(node, _SPIKING):
            size = len(info[n].v)
            env[n] = _Signal(_obj([hy.expression(0.0)] * size, shape), {n: np.eye(size)})
        else:
            env[n] = _Signal(_obj(info[n].v, shape))

    # static nodes, in order
    for name in b.order:
        if name in env or name in b.members:
            continue
        node = g.nodes[name]
        try:
            values = b.gather(env, name, env)
            x = values.get("input")
            if name in b.chains:
                _no_spikes(x, name)
                chain = b.chains[name]
                env[chain.last] = _Signal(b.ffnn(chain, x.ex))
                continue
            ex = b.visit(name, node, {"input": x.ex})
            spk = {}
            if x.spk:
                lin = _LINEAR_SPIKE_MAP.get(type(node))
                if lin is None:
                    _no_spikes(x, name)
                spk = {s: lin(node, m) for s, m in x.spk.items()}
            env[name] = _Signal(ex, spk)
        except Exception as exc:
            exc.add_note(f"while building the ODE for node {name!r} ({type(node).__name__})")
            raise

    # right-hand sides and spike maps
    rhs: dict[int, Any] = {}
    spike_maps: dict[str, dict] = {}
    for n in neurons:
        node, nv = g.nodes[n], info[n]
        values = b.gather(env, n, env)
        x = values.get("input")
        size = len(nv.v)
        cur = x.ex.ravel() if x is not None else [hy.expression(0.0)] * size
        f = {k: np.broadcast_to(np.asarray(getattr(node, k), np.float64).ravel(), (size,))
             for k in ("tau", "tau_syn", "tau_mem", "r", "v_leak", "w_in")
             if getattr(node, k, None) is not None}
        if isinstance(node, (ir.CubaLI, ir.CubaLIF)):
            for j in range(size):
                rhs[nv.i_offset + j] = (-nv.i[j] + f["w_in"][j] * cur[j]) / f["tau_syn"][j]
                rhs[nv.offset + j] = ((f["v_leak"][j] - nv.v[j]) + f["r"][j] * nv.i[j]) \
                    / f["tau_mem"][j]
            targets, gains = nv.i_offset, f["w_in"] / f["tau_syn"]
        elif isinstance(node, (ir.LI, ir.LIF)):
            for j in range(size):
                rhs[nv.offset + j] = ((f["v_leak"][j] - nv.v[j]) + f["r"][j] * cur[j]) / f["tau"][j]
            targets, gains = nv.offset, f["r"] / f["tau"]
        else:  # I, IF
            for j in range(size):
                rhs[nv.offset + j] = f["r"][j] * cur[j]
            targets, gains = nv.offset, f["r"]
        if x is not None:
            for src, m in x.spk.items():
                spike_maps.setdefault(src, {})[n] = (np.arange(targets, targets + size),
                                                      gains[:, None] * m.reshape(size, -1))
    sys = [(state_vars[k], rhs[k]) for k in range(len(state_vars))]
    outputs = [e for o in b.output_names for e in np.asarray(env[o].ex).ravel()]
    ode = HeyokaODE(sys, state_vars, n_in, outputs, info,
                    [info[n] for n in neurons if isinstance(g.nodes[n], _SPIKING)], spike_maps,
                    spike_charge=spike_charge, dt=g.metadata.get("dt"))
    # Output spike maps: (n_out, n_src) per spiking source
    for o_start, o in zip(np.cumsum([0] + [np.asarray(env[o].ex).size for o in b.output_names]),
                          b.output_names):
        for src, m in env[o].spk.items():
            full = ode.out_spike_maps.setdefault(src, np.zeros((len(outputs), m.shape[1])))
            full[o_start:o_start + m.shape[0]] += m
    return ode


def _no_spikes(x, name):
    if x is not None and x.spk:
        src = sorted(x.spk)[0]
        raise ir.GraphError(f"spikes of {src!r} reach a nonlinear node: a spike is an event, not "
                            "a smooth signal", node=name, field="input",
                            fix="feed spikes only through Affine / Linear / Scale / Flatten into "
                                "neurons or outputs")


__all__ = ["to_heyoka_ode", "HeyokaODE", "OdeRun"]
