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
from .heyoka import (HeyokaBuilder, _hy, _input_size, _input_vars, _obj, discrete_paths,
                     ode_form_missing, static_kinds, use_compact_mode)


#: extension fields of spiking kinds that have no continuous-time meaning, and why.
NO_ODE_OPTION = {
    "reset_delay": "a reset one time step after the spike is a rule of discrete steps; in "
                   "continuous time the reset happens at the spike",
    "spike_rule": "'multi' counts floor(v / v_threshold) spikes per discrete step; in continuous "
                  "time each threshold crossing is one spike event (several per step already)",
    "max_spikes": "a cap on the spikes of one discrete step has no continuous-time meaning",
}
#: reset modes with no continuous-time meaning, and why.
NO_ODE_RESET_MODE = {
    "none": "a membrane that is never reset spikes once per discrete step while above threshold; "
            "in continuous time a crossing is one event",
    "subtract_pending_in_test": "the spike test subtracts the previous discrete step's spike, a "
                                "rule of discrete steps",
}


@dataclasses.dataclass
class _Neuron:
    """A neuron node in the system: its kind's declared states, their variables and offsets."""

    name: str
    node: Any
    size: int
    offsets: dict      # state name -> index of its element 0 in the state vector
    vars: dict         # state name -> its variables (one per element)
    params: dict       # field -> float64 values, broadcast to (size,)

    @property
    def spike(self):
        return type(self.node).spike

    @property
    def v(self) -> list:
        """The spiking state's variables."""
        return self.vars[self.spike.state]

    def spike_facts(self):
        """(offset, threshold, reset value, subtract?, spikes at v == threshold?) of the spiking
        state, per element."""
        sp = self.spike
        return (self.offsets[sp.state], self.params[sp.threshold], self.params[sp.reset],
                self.node.reset_mode == "subtract", self.node.threshold_compare == ">=")


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
    """An ODE system built from a graph, ready for heyoka's Taylor integrators.

    Attributes: `sys` (list of (variable, right-hand side)), `state_vars`, `state0` (initial
    state, zeros), `n_inputs` (inputs are `par[0..n_inputs-1]`, all Input nodes flattened in
    order), `outputs` (expressions of the Output nodes' elements, in state and input), `neurons`
    (name -> state offsets), `spiking` (neurons with spike events), `spike_charge` (the charge
    one spike carries into the neurons it feeds; None: the step dt of `run`), `dt` (the graph's
    metadata dt, if any), `size` (the graph's parameter count: what `compact_mode=None` decides
    on), `par_values` / `par_map` (with `params=True`: see `to_heyoka_ode`).

    `integrator(...)` builds a scalar `taylor_adaptive` with the spike events,
    `batch_integrator(batch_size, ...)` a `taylor_adaptive_batch` (one SIMD lane per sequence);
    `run(inputs, dt)` integrates (T, n_in) or (T, batch, n_in) input sequences held constant over
    each step and returns an `OdeRun(t, states, outputs, spikes)`.
    """

    def __init__(self, sys, state_vars, n_inputs, outputs, neurons, spiking, spike_maps,
                 rhs_mode=False, spike_charge=None, dt=None, size=0, par_values=None,
                 par_map=None):
        self.sys, self.state_vars, self.n_inputs = sys, state_vars, n_inputs
        self.outputs, self.neurons, self.spiking = outputs, neurons, spiking
        self.spike_maps = spike_maps          # source -> [(target, state offsets, jump matrix)]
        self.out_spike_maps: dict = {}        # source -> (n_out, n_source) spike-count map
        self.rhs_mode, self.spike_charge, self.dt = rhs_mode, spike_charge, dt
        self.size = size
        self.par_values = np.zeros(0) if par_values is None else par_values
        self.par_map = {} if par_map is None else par_map
        self.state0 = np.zeros(len(state_vars))
        self.record: list = []                # per lane: spikes (time, neuron, index)
        self.lane_base = self.lanes = 0       # the batch lanes being integrated

        self.charge = 1.0                     # charge delivered per spike in the current run
        self._out_cf: dict = {}
        self._ta: dict = {}

    def __repr__(self):
        return (f"HeyokaODE({len(self.state_vars)} states, {self.n_inputs} inputs, "
                f"{len(self.outputs)} outputs, {sum(len(n.v) for n in self.spiking)} spiking)")

    def describe(self) -> str:
        """The system as text: one line per equation, event and output."""
        lines = [f"d{v}/dt = {rhs}" for v, rhs in self.sys]
        for n in self.spiking:
            _, thr, reset, subtract, _ = n.spike_facts()
            after = "v[i] -= v_threshold" if subtract else f"v[i] = v_reset {reset.tolist()}"
            lines.append(f"event: {n.name}.{n.spike.state}[i] crosses v_threshold {thr.tolist()} "
                         f"upwards -> spike, {after}")
        lines += [f"output[{k}] = {e}" for k, e in enumerate(self.outputs)]
        if self.n_inputs:
            lines.append(f"inputs: par[0..{self.n_inputs - 1}] (constant over each step)")
        if self.par_map:
            first = min(self.par_map)
            lines.append(f"weights: par[{first}..{first + len(self.par_map) - 1}] (par_map)")
        return "\n".join(lines)

    def _thresholds(self) -> dict:
        return {n.name: n.spike_facts() for n in self.spiking}

    def _pars(self, lanes: int | None = None) -> np.ndarray:
        """Initial par vector: inputs 0, then the weights' values (params=True)."""
        p = np.concatenate([np.zeros(self.n_inputs), self.par_values])
        return p if lanes is None else np.repeat(p[:, None], lanes, axis=1)

    def _options(self, compact_mode, fp_type, kwargs):
        if compact_mode is None:
            compact_mode = use_compact_mode(self.size, "integrator")
        return dict(kwargs, compact_mode=bool(compact_mode), fp_type=np.dtype(fp_type).type)

    def integrator(self, state0=None, *, tol: float = 0.0, compact_mode: bool | None = None,
                   fp_type=np.float64, **kwargs):
        """A new scalar `heyoka.taylor_adaptive` for the system (inputs as pars, initially 0).
        Spikes are terminal events whose callback records (time, neuron, index) in
        `self.record[0]`, resets v and adds `self.charge` times the weights to the neurons the
        spike feeds. compact_mode=None: chosen from the system's size (`use_compact_mode`)."""
        hy = _hy()
        opts = self._options(compact_mode, fp_type, kwargs)
        state0 = self.state0 if state0 is None else np.asarray(state0, np.float64)
        thresholds = self._thresholds()
        events = [hy.t_event(n.v[k] - float(thresholds[n.name][1][k]), fp_type=opts["fp_type"],
                             callback=_SpikeCallback(self, n.name, k, thresholds),
                             direction=hy.event_direction.positive)
                  for n in self.spiking for k in range(len(n.v))]
        if not self.record:
            self.record = [[]]
        return hy.taylor_adaptive(self.sys, np.asarray(state0, opts["fp_type"]),
                                  pars=self._pars().astype(opts["fp_type"]),
                                  tol=opts["fp_type"](tol),
                                  t_events=events, **opts)

    def batch_integrator(self, batch_size: int, *, tol: float = 0.0,
                         compact_mode: bool | None = None, fp_type=np.float64, **kwargs):
        """A `heyoka.taylor_adaptive_batch` of `batch_size` lanes (SIMD), zero state, with the
        spike events; lane b records its spikes in `self.record[self.lane_base + b]`."""
        hy = _hy()
        opts = self._options(compact_mode, fp_type, kwargs)
        thresholds = self._thresholds()
        events = [hy.t_event_batch(n.v[k] - float(thresholds[n.name][1][k]),
                                   fp_type=opts["fp_type"],
                                   callback=_SpikeCallback(self, n.name, k, thresholds),
                                   direction=hy.event_direction.positive)
                  for n in self.spiking for k in range(len(n.v))]
        state = np.zeros((len(self.state_vars), int(batch_size)), opts["fp_type"])
        return hy.taylor_adaptive_batch(self.sys, state,
                                        pars=self._pars(batch_size).astype(opts["fp_type"]),
                                        tol=opts["fp_type"](tol), t_events=events, **opts)

    def compiled(self, batch_size: int = 1, **options):
        """The batch integrator for these options, compiled once and kept."""
        key = (int(batch_size),) + tuple(sorted((k, str(v)) for k, v in options.items()))
        if key not in self._ta:
            self._ta[key] = self.batch_integrator(batch_size, **options)
        return self._ta[key]

    def output_function(self, fp_type=np.float64):
        """cfunc: states (as variables), inputs and weights (as pars) -> outputs."""
        fp = np.dtype(fp_type).type
        if fp not in self._out_cf:
            self._out_cf[fp] = _hy().cfunc(self.outputs, self.state_vars, fp_type=fp)
        return self._out_cf[fp]

    def run(self, inputs, dt: float | None = None, state0=None, *, batch_size: int | None = None,
            **options) -> "OdeRun":
        """Integrate a (T, n_in) input sequence, or (T, batch, n_in) sequences side by side in
        heyoka's batch mode (`batch_size` lanes at a time, default: as many as the batch up to
        heyoka's recommended SIMD size), row k held constant on [k dt, (k+1) dt]. Returns the
        states and outputs at the end of each step ((T, [batch,] n_state), (T, [batch,] n_out))
        and the exact spike times. A spiking output element at step k counts the spikes in that
        step. Options (compact_mode, fp_type, tol, ...) go to the integrator, which is compiled
        once per option set and batch size and reused."""
        hy = _hy()
        if self.rhs_mode:
            raise ir.GraphError("this system is dx/dt = graph(x): it takes no input sequence",
                                field="inputs", fix="use integrator(state0).propagate_grid(times)")
        dt = self.dt if dt is None else dt
        if dt is None:
            raise ir.GraphError("no time step: the graph's metadata has no 'dt'", field="dt",
                                fix="pass dt=...")
        dt = float(dt)
        x = np.asarray(inputs, np.float64)
        single = x.ndim < 3
        if x.ndim == 1 and self.n_inputs == 1:
            x = x[:, None]
        if single:
            x = x.reshape(x.shape[0], 1, -1)
        if x.ndim != 3 or x.shape[2] != self.n_inputs:
            raise ir.GraphError(f"input sequence has shape {np.shape(inputs)}, the graph takes "
                                f"{self.n_inputs} values per step", field="inputs",
                                fix="pass (T, n_in) or (T, batch, n_in)")
        T, B = x.shape[0], x.shape[1]
        fp = np.dtype(options.get("fp_type", np.float64)).type
        if batch_size is None:
            batch_size = min(B, hy.recommended_simd_size(fp_type=fp)) or 1
        ta = self.compiled(batch_size, **options)
        self.record = [[] for _ in range(B)]
        self.charge = float(dt if self.spike_charge is None else self.spike_charge)
        s0 = self.state0 if state0 is None else np.asarray(state0, np.float64)
        states = np.empty((T, B, len(self.state_vars)))
        weights = self.par_values[:, None]
        limit = hy.taylor_outcome.time_limit
        for base in range(0, B, batch_size):
            lanes = min(batch_size, B - base)
            self.lane_base, self.lanes = base, lanes
            ta.set_time(np.zeros(batch_size, fp))
            ta.state[:] = s0[:, None]
            if self.spiking:
                ta.reset_cooldowns()
            # lanes past the batch's end copy real ones (a lane with no input integrates slowly)
            copy = base + np.arange(batch_size) % lanes
            for k in range(T):
                pars = x[k, copy].T
                ta.pars[:] = np.concatenate([pars, np.broadcast_to(weights, (len(weights),
                                                                            batch_size))])
                ta.propagate_until(np.full(batch_size, (k + 1) * dt, fp))
                bad = [r[0] for r in ta.propagate_res[:lanes] if r[0] != limit]
                if bad:
                    raise RuntimeError(f"heyoka stopped at t={ta.time} with {bad[0]}")
                states[k, base:base + lanes] = ta.state[:, :lanes].T
        outs = np.zeros((T, B, len(self.outputs)))
        if self.outputs:
            cf = self.output_function()
            flat_x = x.reshape(T * B, -1)
            pars = np.concatenate([flat_x.T, np.broadcast_to(weights, (len(weights), T * B))])
            outs[:] = cf(np.ascontiguousarray(states.reshape(T * B, -1).T),
                         pars=np.ascontiguousarray(pars[:cf.nparams]) if cf.nparams else None
                         ).T.reshape(T, B, -1)
        for name, m in self.out_spike_maps.items():
            for b, rec in enumerate(self.record):
                hits = [(min(int(t / dt), T - 1), idx) for t, src, idx in rec if src == name]
                if hits:
                    counts = np.zeros((T, m.shape[1]))
                    np.add.at(counts, tuple(np.array(hits).T), 1)
                    outs[:, b] += counts @ m.T
        t = np.arange(1, T + 1) * dt
        if single:
            return OdeRun(t, states[:, 0], outs[:, 0], list(self.record[0]))
        return OdeRun(t, states, outs, [list(r) for r in self.record])


@dataclasses.dataclass
class OdeRun:
    """Result of `HeyokaODE.run`: step end times (T,), states (T, [batch,] n_state), outputs
    (T, [batch,] n_out), spikes [(time, neuron node, index)] in time order (one such list per
    sequence for a batch)."""

    t: np.ndarray
    states: np.ndarray
    outputs: np.ndarray
    spikes: list

    def spike_times(self, neuron: str | None = None, index: int = 0, batch: int | None = None
                    ) -> np.ndarray:
        spikes = self.spikes if batch is None else self.spikes[batch]
        return np.array([t for t, n, i in spikes
                         if (neuron is None or n == neuron) and i == index])


class _SpikeCallback:
    """Terminal-event callback (scalar or batch integrator): record the spike, reset v, deliver
    the charge to the neurons the spiking one feeds; a neuron pushed over its threshold by that
    charge spikes at once. A neuron fires at most once per instant: one pushed back over its
    threshold by its own cascade would spike forever, and that is an error that says why."""

    def __init__(self, ode, name, index, thresholds):
        self.ode, self.name, self.index, self.thresholds = ode, name, index, thresholds

    def __deepcopy__(self, memo):
        # heyoka deep-copies callbacks into the integrator; keep this one bound to its ODE.
        return self

    def __call__(self, ta, d_sgn, lane=None) -> bool:
        ode = self.ode
        if lane is None:
            st, now, record = ta.state, float(ta.time), ode.record[0]
        elif lane >= ode.lanes:  # a padding lane (a copy of a real one): only keep it regular
            off, thr, reset, subtract, _ = self.thresholds[self.name]
            k = self.index
            ta.state[off + k, lane] = ta.state[off + k, lane] - thr[k] if subtract else reset[k]
            return True
        else:
            st, now = ta.state[:, lane], float(ta.time[lane])
            record = ode.record[ode.lane_base + lane]
        queue = [(self.name, self.index)]
        fired = set()
        while queue:
            name, k = queue.pop(0)
            off, thr, reset, subtract, _ = self.thresholds[name]
            if (name, k) in fired:
                raise _cascade_error(ode, name, k, now)
            fired.add((name, k))
            record.append((now, name, k))
            st[off + k] = st[off + k] - thr[k] if subtract else reset[k]
            for target, offsets, jumps in ode.spike_maps.get(name, ()):
                st[offsets] += ode.charge * jumps[:, k]
                if target in self.thresholds:
                    t_off, t_thr, _, _, inclusive = self.thresholds[target]
                    vs = st[t_off:t_off + len(t_thr)]
                    for j in np.nonzero(vs >= t_thr if inclusive else vs > t_thr)[0]:
                        if (target, int(j)) not in queue:
                            queue.append((target, int(j)))
        return True


def _cascade_error(ode, name, k, now) -> ir.GraphError:
    return ir.GraphError(
        f"{name}[{k}] spikes twice at the same instant t={now:.6g}: the charge its spike cascade "
        "delivers back to it (through a recurrent edge) lifts it over v_threshold again right "
        "after its reset, so in continuous time it would spike without end", node=name,
        field="v_threshold",
        fix="make the recurrent weight times the spike charge smaller than v_threshold - "
            "v_reset, or pass a smaller spike_charge to to_heyoka_ode; or simulate in discrete "
            "time, where a recurrent spike arrives one step later: polyir.to_torch(graph, dt=...) "
            "or polyir.compile(graph, 'c')")


def to_heyoka_ode(graph: ir.Graph, spike_charge: float | None = None, mode: str = "eval",
                  ffnn: bool = True, params: bool = False) -> HeyokaODE:
    """Leaky-integrator graph -> HeyokaODE (see its docstring; docs/heyoka.md has the spiking
    semantics).

    Neurons follow NIR's continuous-time equations (LI: tau dv/dt = v_leak - v + r I; CubaLI adds
    tau_syn dI/dt = -I + w_in S; I: dv/dt = r I), initial state 0. LIF / CubaLIF / IF spike when v
    crosses v_threshold upwards (a heyoka terminal event: exact time), v is reset to v_reset, and
    each spike delivers `spike_charge` (default: the step dt of `run`, what a 0/1 spike held for
    one step delivers in a discrete simulator) times the weights of the linear path (Affine /
    Linear / Scale / Flatten) to the neurons it feeds. A spike reaching a nonlinear node is an
    error. A graph with no neurons is read as dx/dt = graph(x) (inputs = state, needs
    n_in == n_out).

    `params=True` makes the static nodes' weights heyoka pars, as `to_heyoka` does (same order,
    same PAR_FIELDS), placed after the inputs: par[n_inputs + k]. The system then carries
    `par_values` and `par_map` ({par index: (node, field, flat index)}) for `write_params` and
    for sensitivities with `heyoka.var_ode_sys(sys, heyoka.var_args.params)`. Spike jumps are
    applied by event callbacks, outside heyoka's expressions, so params=True is refused for
    graphs with spiking neurons.
    """
    hy = _hy()
    g = graph.flattened()
    missing = ode_form_missing(g)
    if missing is not None:
        name, why = missing
        raise ir.GraphError(f"{type(g.nodes[name]).__name__} {why}", node=name, field="type",
                            fix=f"heyoka's ODE path takes neurons and "
                                f"{sorted(k.__name__ for k in static_kinds())}; "
                                f"{discrete_paths(g)}")
    neurons_present = any(isinstance(k, ir.Neuron) for k in g.nodes.values())
    spiking_present = [n for n, k in g.nodes.items() if isinstance(k, ir.Neuron) and k.spike]
    if params and spiking_present:
        raise ir.GraphError("params=True on a graph with spiking neurons: spike jumps are applied "
                            "by event callbacks outside heyoka's expressions, so trained par[] "
                            "values would not reach them", node=spiking_present[0],
                            field="params", fix="use params=False, or train the spiking graph "
                                                "with polyir.to_torch(graph, dt=...)")
    for n in spiking_present:
        _check_spiking(n, g.nodes[n])
    n_in = sum(_input_size(g, n) for n in g.inputs) if neurons_present else 0
    b = HeyokaBuilder(g, mode=mode, ffnn=ffnn, params=params, par_base=n_in)
    g = b.graph
    neurons = [n for n in b.order if isinstance(g.nodes[n], ir.Neuron)]
    extra = {"size": g.parameter_count(), "par_values": b.par_values, "par_map": b.par_map}

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
        return HeyokaODE(list(zip(flat, rhs)), flat, 0, list(flat), {}, [], {}, rhs_mode=True,
                         **extra)

    # inputs are parameters
    sizes = [_input_size(g, n) for n in b.input_names]
    feeds, k = {}, 0
    for n, s in zip(b.input_names, sizes):
        feeds[n] = _Signal(_obj([hy.par[k + i] for i in range(s)], g.nodes[n].shape))
        k += s

    # state variables per neuron, as its kind declares them
    types = b.types
    state_vars: list = []
    info: dict[str, _Neuron] = {}
    for n in neurons:
        node = g.nodes[n]
        shape = tuple(types[n].shape)
        size = int(np.prod(shape, dtype=np.int64))
        offsets, variables = {}, {}
        for st in type(node).states:
            offsets[st.name] = len(state_vars)
            variables[st.name] = [hy.expression(f"{n}.{st.name}{j}") for j in range(size)]
            state_vars += variables[st.name]
        params = {f: np.broadcast_to(np.asarray(v, np.float64), shape).ravel()
                  for f, v in node.parameters().items()}
        info[n] = _Neuron(n, node, size, offsets, variables, params)

    env: dict[str, Any] = dict(feeds)
    for n in neurons:
        nv, shape = info[n], tuple(types[n].shape)
        if nv.node.spike:  # a spiking neuron's output is its spikes: events, no smooth value
            env[n] = _Signal(_obj([hy.expression(0.0)] * nv.size, shape), {n: np.eye(nv.size)})
        else:  # otherwise its last state
            env[n] = _Signal(_obj(nv.vars[type(nv.node).states[-1].name], shape))

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

    # right-hand sides (each state's declared derivative) and spike maps (a spike's charge
    # enters the states the input drives, with their input gain)
    rhs: dict[int, Any] = {}
    spike_maps: dict[str, list] = {}
    for n in neurons:
        nv = info[n]
        x = b.gather(env, n, env).get("input")
        cur = x.ex.ravel() if x is not None else [hy.expression(0.0)] * nv.size
        for st in type(nv.node).states:
            drive = cur if st.drive == "input" else nv.vars[st.drive]
            for j in range(nv.size):
                p_j = {f: float(v[j]) for f, v in nv.params.items()}
                rhs[nv.offsets[st.name] + j] = st.derivative(nv.vars[st.name][j], drive[j], p_j)
            if st.drive == "input" and x is not None:
                gain = np.asarray(st.input_gain(nv.params), np.float64)
                offsets = np.arange(nv.offsets[st.name], nv.offsets[st.name] + nv.size)
                for src, m in x.spk.items():
                    spike_maps.setdefault(src, []).append(
                        (n, offsets, gain[:, None] * m.reshape(nv.size, -1)))
    sys = [(state_vars[k], rhs[k]) for k in range(len(state_vars))]
    outputs = [e for o in b.output_names for e in np.asarray(env[o].ex).ravel()]
    ode = HeyokaODE(sys, state_vars, n_in, outputs, info,
                    [info[n] for n in neurons if g.nodes[n].spike], spike_maps,
                    spike_charge=spike_charge, dt=g.metadata.get("dt"), **extra)
    # Output spike maps: (n_out, n_src) per spiking source
    for o_start, o in zip(np.cumsum([0] + [np.asarray(env[o].ex).size for o in b.output_names]),
                          b.output_names):
        for src, m in env[o].spk.items():
            full = ode.out_spike_maps.setdefault(src, np.zeros((len(outputs), m.shape[1])))
            full[o_start:o_start + m.shape[0]] += m
    return ode


def _check_spiking(name, node):
    """Refuse what the ODE cannot honour: discrete-step extension fields, and a reset that leaves
    the membrane at or above its threshold (it would spike without end)."""
    for field, value in node.non_default_options().items():
        if field in NO_ODE_OPTION:
            raise ir.GraphError(f"{type(node).__name__} has {field}={value!r}: "
                                f"{NO_ODE_OPTION[field]}", node=name, field=field,
                                fix=f"set {field} to its default for the ODE, or run the graph "
                                    "in discrete time with polyir.to_torch(graph, dt=...) or "
                                    "polyir.compile(graph, 'c')")
    if node.reset_mode in NO_ODE_RESET_MODE:
        raise ir.GraphError(f"{type(node).__name__} has reset_mode={node.reset_mode!r}: "
                            f"{NO_ODE_RESET_MODE[node.reset_mode]}", node=name,
                            field="reset_mode",
                            fix="run the graph in discrete time with polyir.to_torch(graph, "
                                "dt=...) or polyir.compile(graph, 'c')")
    sp = type(node).spike
    thr = np.asarray(getattr(node, sp.threshold), np.float64)
    after = (np.zeros_like(thr) if node.reset_mode == "subtract"  # v = thr - thr at the crossing
             else np.broadcast_to(np.asarray(getattr(node, sp.reset), np.float64), thr.shape))
    bad = (after >= thr).ravel()
    if bad.any():
        j = int(np.argmax(bad))
        what = ("v_threshold - v_threshold = 0" if node.reset_mode == "subtract"
                else f"v_reset[{j}] = {after.ravel()[j]:g}")
        raise ir.GraphError(f"after a spike the membrane is {what}, not below v_threshold[{j}] = "
                            f"{thr.ravel()[j]:g}: it would spike without end in continuous time",
                            node=name, field="v_threshold" if node.reset_mode == "subtract"
                            else "v_reset", fix="set v_reset below v_threshold (with "
                                                "reset_mode='subtract': a positive v_threshold)")


def _no_spikes(x, name):
    if x is not None and x.spk:
        src = sorted(x.spk)[0]
        raise ir.GraphError(f"spikes of {src!r} reach a nonlinear node: a spike is an event, not "
                            "a smooth signal", node=name, field="input",
                            fix="feed spikes only through Affine / Linear / Scale / Flatten into "
                                "neurons or outputs")


__all__ = ["to_heyoka_ode", "HeyokaODE", "OdeRun"]
