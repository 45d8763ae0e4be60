"""Graph -> heyoka: expressions for smooth feed-forward graphs, ODE systems for leaky integrators.

`to_heyoka(graph)` turns a graph of Affine / Linear / Scale / Activation / Flatten / relaxed
LogicLayer / LogicTree2d / OrPool2d (max, via select) / GroupSum nodes into one heyoka expression
per output element. Every maximal MLP chain
(Affine/Linear -> Activation -> ... , found by `polyir.ir.patterns.find_ffnn_chains`) becomes one
`heyoka.model.ffnn` call with the flattened weights in heyoka's order (all weight matrices first,
each row-major (out, in), then all biases; tests/test_heyoka.py checks that order against heyoka);
everything else is built node by node, edges into one port summed (NIR's rule).

`to_heyoka_ode(graph)` turns a graph of LI / CubaLI / I / LIF / CubaLIF / IF neurons and static
Affine / Linear / Scale / Activation / Flatten nodes into an ODE system for
`heyoka.taylor_adaptive`, in continuous time (NIR's equations, no discretisation): the graph's
inputs are runtime parameters `par[0..n_in-1]`, held constant over each step of an input sequence.
Spikes are terminal events: the integrator stops at the exact crossing time v = v_threshold, a
callback resets v to v_reset and adds the spike's charge to the neurons it feeds, and integration
goes on. A graph with no neuron at all is read as a right-hand side: dx/dt = graph(x).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from .. import ir
from ..ir.kinds.logic import GATE_COEFFS
from ..ir.patterns import FfnnChain, find_ffnn_chains
from ..ir.walk import GraphWalker, RuleTable

heyoka_rule = RuleTable("heyoka")

#: kinds with no smooth (expression) form, and why.
NO_SMOOTH_FORM = {
    ir.Threshold: "is a hard step (Heaviside): it has no smooth heyoka expression",
    ir.Binarize: "is a hard threshold (thermometer encoding): it has no smooth heyoka expression",
    ir.RuleSet: "needs Datalog grounding over input facts: it has no fixed heyoka expression",
}
_FIX_SMOOTH = ("build expressions from the smooth part of the graph only, or run the whole graph "
               "with polyir.to_torch / polyir.compile(g, 'c')")
_NEURONS = (ir.I, ir.IF, ir.LI, ir.LIF, ir.CubaLI, ir.CubaLIF)
_SPIKING = (ir.IF, ir.LIF, ir.CubaLIF)


def _hy():
    try:
        import heyoka
    except ImportError as exc:  # pragma: no cover - heyoka is a dependency
        raise ImportError("polyir's heyoka importer needs heyoka.py (pip install heyoka)") from exc
    return heyoka


# --- activations ----------------------------------------------------------------------------
def activation(fn: str, alpha: float | None = None, name: str | None = None) -> Callable:
    """heyoka expression -> expression for one of ir.ACTIVATIONS, exact (same function as torch's
    elementwise op; softplus without torch's linear cut-off above beta x > 20)."""
    hy = _hy()
    a = float(ir.ACTIVATIONS[fn][0] if alpha is None else alpha) if fn in ir.ACTIVATIONS else 0.0

    def softplus(x):
        bx = a * x
        # log(1 + exp(bx)) / beta, written so that neither branch overflows.
        return hy.select(hy.gt(bx, 0.0), x + hy.log1p(hy.exp(-bx)) / a,
                         hy.log1p(hy.exp(bx)) / a)

    table: dict[str, Callable] = {
        "identity": lambda x: x,
        "tanh": hy.tanh,
        "sigmoid": hy.sigmoid,
        "relu": hy.relu,
        "leaky_relu": lambda x: hy.relu(x, a),
        "elu": lambda x: hy.select(hy.gt(x, 0.0), x, a * hy.expm1(x)),
        "softplus": softplus,
        "gelu": lambda x: 0.5 * x * (1.0 + hy.erf(x * float(1 / np.sqrt(2.0)))),
        "silu": lambda x: x * hy.sigmoid(x),
        "hardtanh": lambda x: hy.select(hy.lt(x, -a), hy.expression(-a),
                                        hy.select(hy.gt(x, a), hy.expression(a), x)),
        "exp": hy.exp,
    }
    if fn not in table:
        raise ir.GraphError(f"activation {fn!r} has no heyoka form", node=name, field="fn",
                            fix=f"use one of {sorted(table)}")
    if fn == "softplus" and a == 0:
        raise ir.GraphError("softplus with beta = 0 is undefined", node=name, field="alpha",
                            fix="use beta != 0")
    return table[fn]


def _compose(fns: Sequence[Callable]) -> Callable:
    def f(x):
        for fn in fns:
            x = fn(x)
        return x
    return f


# --- the expression walker ------------------------------------------------------------------
class HeyokaBuilder(GraphWalker):
    """Walks a graph producing, for every node, a numpy object array (the node's port shape) of
    heyoka expressions. Constants of Affine/Linear/Scale become `par[i]` when `params` is true
    (values collected in `self.par_values`)."""

    def __init__(self, graph: ir.Graph, *, params: bool = False, mode: str = "eval",
                 ffnn: bool = True):
        super().__init__(graph)
        if mode not in ("eval", "train"):
            raise ir.GraphError(f"mode {mode!r} is neither 'eval' nor 'train'", field="mode",
                                fix="eval: hard gates; train: softmax of the logits")
        self.hy = _hy()
        self.params, self.mode = params, mode
        self.par_values: list[float] = []
        self.chains: dict[str, FfnnChain] = {}
        self.members: set[str] = set()
        if ffnn:
            for c in find_ffnn_chains(self.graph):
                self.chains[c.head] = c
                self.members.update(c.nodes[1:])

    # constants: numbers, or fresh par[i] holding them
    def const(self, values) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if not self.params:
            return values
        start = len(self.par_values)
        self.par_values.extend(values.ravel().tolist())
        pars = [self.hy.par[i] for i in range(start, start + values.size)]
        return np.array(pars, dtype=object).reshape(values.shape)

    def dot(self, w_row, x) -> Any:
        hy = self.hy
        terms = [(wi if self.params else float(wi)) * xi for wi, xi in zip(w_row, x)]
        return hy.sum(terms) if terms else hy.expression(0.0)

    def evaluate(self, feeds: dict[str, np.ndarray], env: dict | None = None) -> dict:
        """Values of every node given the Input nodes' values (object arrays)."""
        env = dict(env or {})
        env.update(feeds)
        for name in self.order:
            if name in env or name in self.members:
                continue
            node = self.graph.nodes[name]
            try:
                values = self.gather(env, name, env)
                if name in self.chains:
                    chain = self.chains[name]
                    env[chain.last] = self.ffnn(chain, values["input"])
                else:
                    env[name] = self.visit(name, node, values)
            except Exception as exc:
                exc.add_note(f"while building heyoka expressions for node {name!r} "
                             f"({type(node).__name__})")
                raise
        return env

    def visit(self, name, node, values):
        for cls, why in NO_SMOOTH_FORM.items():
            if isinstance(node, cls):
                raise ir.GraphError(f"{type(node).__name__} {why}", node=name, field="type",
                                    fix=_FIX_SMOOTH)
        if isinstance(node, _NEURONS):
            raise ir.GraphError(f"{type(node).__name__} is a stateful neuron: it has no "
                                "expression form", node=name, field="type",
                                fix="use polyir.to_heyoka_ode(graph) for leaky-integrator graphs")
        rule = heyoka_rule.lookup(name, node)
        return rule(self, name, node, values.get("input"))

    def ffnn(self, chain: FfnnChain, x: np.ndarray) -> np.ndarray:
        """One heyoka.model.ffnn for the chain: nn_wb = all weights (row-major (out, in), layer
        by layer), then all biases (Linear layers: zeros that stay numbers even with params)."""
        hy = self.hy
        dense = [self.graph.nodes[layer.dense] for layer in chain.layers]
        acts = []
        for layer in chain.layers:
            acts.append(_compose([activation(self.graph.nodes[a].fn, self.graph.nodes[a].alpha, a)
                                  for a in layer.activations]))
        sizes = [int(d.weight.shape[0]) for d in dense]
        if not self.params:
            wb = [float(v) for d in dense for v in np.asarray(d.weight, np.float64).ravel()]
            wb += [float(v) for d in dense for v in
                   (np.asarray(d.bias, np.float64) if isinstance(d, ir.Affine)
                    else np.zeros(d.weight.shape[0]))]
        else:
            wb = [w for d in dense for w in self.const(d.weight).ravel()]
            for d in dense:
                wb += (list(self.const(d.bias)) if isinstance(d, ir.Affine)
                       else [hy.expression(0.0)] * d.weight.shape[0])
            wb = [w if isinstance(w, hy.expression) else hy.expression(float(w)) for w in wb]
        out = hy.model.ffnn(list(x.ravel()), sizes[:-1], sizes[-1], acts, wb)
        return np.array(out, dtype=object)


def _obj(values, shape=None) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr if shape is None else arr.reshape(shape)


@heyoka_rule(ir.Output)
def _output(b, name, node, x):
    return x


@heyoka_rule(ir.Input)
def _input(b, name, node, x):  # Inputs are fed, never visited
    raise ir.GraphError("an Input node was not fed", node=name, fix="pass its variables")


@heyoka_rule(ir.Affine, ir.Linear)
def _dense(b, name, node, x):
    w = b.const(node.weight)
    rows = [b.dot(w[i], x) for i in range(w.shape[0])]
    if isinstance(node, ir.Affine):
        bias = b.const(node.bias)
        rows = [r + (bi if b.params else float(bi)) for r, bi in zip(rows, bias)]
    return _obj(rows)


@heyoka_rule(ir.Scale)
def _scale(b, name, node, x):
    s = b.const(node.scale)
    return _obj([(si if b.params else float(si)) * xi for si, xi in zip(s.ravel(), x.ravel())],
                x.shape)


@heyoka_rule(ir.Activation)
def _activation(b, name, node, x):
    f = activation(node.fn, node.alpha, name)
    return _obj([f(xi) for xi in x.ravel()], x.shape)


@heyoka_rule(ir.Flatten)
def _flatten(b, name, node, x):
    shape = node.out_port({"input": ir.port(x.shape)}).shape
    return x.reshape(shape)


def gate_coefficients(node, mode: str) -> np.ndarray:
    """(..., 4) coefficients c0..c3 of c0 + c1 a + c2 b + c3 ab per gate of a LogicLayer (gate)
    or LogicTree2d (gates): one-hot gates in eval mode, softmax(logits) @ GATE_COEFFS in train
    mode (hard gates where the node keeps no logits)."""
    coeffs = GATE_COEFFS.astype(np.float64)
    if mode == "train" and node.logits is not None:
        z = np.asarray(node.logits, np.float64)
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return (z / z.sum(axis=-1, keepdims=True)) @ coeffs
    gates = node.gate if isinstance(node, ir.LogicLayer) else node.gates
    return coeffs[np.asarray(gates, np.int64)]


@heyoka_rule(ir.LogicLayer)
def _logic(b, name, node, x):
    c = gate_coefficients(node, b.mode)
    return _obj([_gate_expr(b.hy, c[j], x[int(node.a[j])], x[int(node.b[j])])
                 for j in range(len(node.gate))])


def _gate_expr(hy, c, xa, xb):
    """c0 + c1 a + c2 b + c3 ab, zero terms left out."""
    terms = [float(ci) * t for ci, t in zip(c, (hy.expression(1.0), xa, xb, xa * xb)) if ci != 0]
    return hy.sum(terms) if terms else hy.expression(0.0)


def _padded(hy, x, pad):
    """(C, H, W) object array zero-padded in H and W."""
    c, h, w = x.shape
    out = np.empty((c, h + 2 * pad[0], w + 2 * pad[1]), dtype=object)
    out[...] = hy.expression(0.0)
    out[:, pad[0]:pad[0] + h, pad[1]:pad[1] + w] = x
    return out


@heyoka_rule(ir.LogicTree2d)
def _logic_tree(b, name, node, x):
    hy = b.hy
    k_count = node.leaves.shape[0]
    coeffs = gate_coefficients(node, b.mode)
    xp = _padded(hy, x, node.padding)
    out_shape = node.out_port({"input": ir.port(x.shape, "bit")}).shape
    (kh, kw), (sh, sw) = node.kernel_size, node.stride
    out = np.empty(out_shape, dtype=object)
    for k in range(k_count):
        for oy in range(out_shape[1]):
            for ox in range(out_shape[2]):
                vals = [xp[ch, oy * sh + dy, ox * sw + dx] for ch, dy, dx in node.leaves[k]]
                gi = 0
                while len(vals) > 1:
                    nxt = []
                    for i in range(len(vals) // 2):
                        nxt.append(_gate_expr(hy, coeffs[k, gi], vals[2 * i], vals[2 * i + 1]))
                        gi += 1
                    vals = nxt
                out[k, oy, ox] = vals[0]
    return out


@heyoka_rule(ir.OrPool2d)
def _or_pool(b, name, node, x):
    """max over each window (exact, through heyoka's select); padding reads 0."""
    hy = b.hy
    xp = _padded(hy, x, node.padding)
    out_shape = node.out_port({"input": ir.port(x.shape, "bit")}).shape
    (kh, kw), (sh, sw) = node.kernel_size, node.stride
    out = np.empty(out_shape, dtype=object)
    for c in range(out_shape[0]):
        for oy in range(out_shape[1]):
            for ox in range(out_shape[2]):
                m = None
                for dy in range(kh):
                    for dx in range(kw):
                        v = xp[c, oy * sh + dy, ox * sw + dx]
                        m = v if m is None else hy.select(hy.gt(v, m), v, m)
                out[c, oy, ox] = m
    return out


@heyoka_rule(ir.GroupSum)
def _groupsum(b, name, node, x):
    size = x.shape[0] // node.k
    return _obj([(b.hy.sum(list(x[c * size:(c + 1) * size])) + float(node.beta)) / float(node.tau)
                 for c in range(node.k)])


def _input_size(graph: ir.Graph, name: str) -> int:
    return int(np.prod(graph.nodes[name].shape, dtype=np.int64))


def _input_vars(walker: GraphWalker, inputs) -> tuple[dict, list]:
    """Feeds (Input name -> object array of its shape) and the flat list of variables."""
    hy = _hy()
    names = walker.input_names
    sizes = [_input_size(walker.graph, n) for n in names]
    if inputs is None:
        if len(names) == 1:
            flat = list(hy.make_vars(*[f"x{i}" for i in range(sizes[0])])) if sizes[0] > 1 \
                else [hy.make_vars("x0")]
        else:
            flat = []
            for n, s in zip(names, sizes):
                vs = hy.make_vars(*[f"{n}_{i}" for i in range(s)])
                flat += list(vs) if s > 1 else [vs]
    else:
        flat = list(inputs)
        if len(flat) != sum(sizes):
            raise ir.GraphError(f"{len(flat)} input expressions given, the graph's inputs "
                                f"{names} have {sum(sizes)} elements", field="inputs",
                                fix="pass one heyoka expression per input element")
    feeds, k = {}, 0
    for n, s in zip(names, sizes):
        feeds[n] = _obj(flat[k:k + s], walker.graph.nodes[n].shape)
        k += s
    return feeds, flat


def to_heyoka(graph: ir.Graph, inputs: Sequence | None = None, params: bool = False,
              mode: str = "eval", ffnn: bool = True):
    """Graph -> (expressions, input variables), or (expressions, input variables, par values)
    with `params=True`.

    - `inputs`: heyoka expressions to use for the inputs' elements (all Input nodes in order,
      each flattened in C order); default fresh variables x0, x1, ... (one Input) or
      `<input>_<i>`.
    - `params`: Affine/Linear weights and biases and Scale factors become `heyoka.par[i]`; the
      third returned item is the float64 array of their values (par[i] = values[i]), in order of
      appearance; inside an ffnn chain in heyoka's nn_wb order.
    - `mode`: "eval" applies logic layers' hard gates, "train" their relaxed softmax mixture.
    - `ffnn`: map MLP chains to `heyoka.model.ffnn` (False: node by node, same values).

    The expressions are all Output nodes' elements, in order, each flattened in C order.
    """
    b = HeyokaBuilder(graph, params=params, mode=mode, ffnn=ffnn)
    stateful = [n for n in b.order if b.graph.nodes[n].stateful]
    if stateful:
        n = stateful[0]
        raise ir.GraphError(f"{type(b.graph.nodes[n]).__name__} is stateful: a graph with "
                            "neurons has no expression form", node=n, field="type",
                            fix="use polyir.to_heyoka_ode(graph)")
    feeds, flat = _input_vars(b, inputs)
    env = b.evaluate(feeds)
    exprs = [e for o in b.output_names for e in np.asarray(env[o]).ravel()]
    if params:
        return exprs, flat, np.asarray(b.par_values, dtype=np.float64)
    return exprs, flat


# --- ODE systems ----------------------------------------------------------------------------
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


__all__ = ["heyoka_rule", "to_heyoka", "to_heyoka_ode", "activation", "gate_coefficients",
           "HeyokaBuilder", "HeyokaODE", "OdeRun", "NO_SMOOTH_FORM"]
