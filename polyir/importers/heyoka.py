"""Graph -> heyoka expressions for stateless graphs.

`to_heyoka(graph)` turns a graph of Affine / Linear / Scale / Activation / Flatten / relaxed
LogicLayer / LogicTree2d / OrPool2d (max, via select) / GroupSum nodes into one heyoka expression
per output element. Every maximal MLP chain
(Affine/Linear -> Activation -> ... , found by `polyir.ir.patterns.find_ffnn_chains`) becomes one
`heyoka.model.ffnn` call with the flattened weights in heyoka's order (all weight matrices first,
each row-major (out, in), then all biases; tests/test_heyoka.py checks that order against heyoka);
everything else is built node by node, edges into one port summed (NIR's rule). Graphs with
neurons go to `polyir.importers.heyoka_ode`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .. import ir
from ..ir.kinds.cnn import adaptive_windows, operand_ports
from ..ir.kinds.logic import GATE_COEFFS
from ..ir.patterns import FfnnChain, find_ffnn_chains
from ..ir.walk import GraphWalker, RuleTable
from .heyoka_params import PAR_FIELDS

heyoka_rule = RuleTable("heyoka")

#: kinds with no smooth (expression) form, and why.
NO_SMOOTH_FORM = {
    ir.Threshold: "is a hard step (Heaviside): it has no smooth heyoka expression",
    ir.Binarize: "is a hard threshold (thermometer encoding): it has no smooth heyoka expression",
    ir.RuleSet: "needs Datalog grounding over input facts: it has no fixed heyoka expression",
}

#: the parameter counts above which heyoka's compact mode pays off, for a cfunc and for a Taylor
#: integrator (whose code is the expression's Taylor coefficients, many times larger): measured by
#: benchmarks/heyoka_compile.py (MLPs of 105 .. 13,256 parameters, SNNs of 48 .. 1,748; numbers
#: in docs/heyoka.md).
COMPACT_ABOVE = {"cfunc": 500, "integrator": 100}


def use_compact_mode(size: int, program: str = "cfunc") -> bool:
    """Compact mode for a `program` ("cfunc" | "integrator") built from `size` parameters: above
    COMPACT_ABOVE[program] it compiles faster (a 5.5k-parameter MLP 6x, a 384-parameter SNN
    integrator 10x) and evaluates as fast or faster; below, both modes compile in well under a
    second and the full mode evaluates a little faster."""
    return int(size) > COMPACT_ABOVE[program]


def _hy():
    try:
        import heyoka
    except ImportError as exc:  # pragma: no cover - heyoka is a dependency
        raise ImportError("polyir's heyoka importer needs heyoka.py (pip install heyoka)") from exc
    return heyoka


# --- activations ----------------------------------------------------------------------------
def activation(fn: str, alpha: float | None = None, name: str | None = None) -> Callable:
    """heyoka expression -> expression for one of ir.ACTIVATIONS, with the definitions written
    there (softplus linear above beta x > 20 as torch's; relu keeps NaN)."""
    hy = _hy()
    a = float(ir.ACTIVATIONS[fn][0] if alpha is None else alpha) if fn in ir.ACTIVATIONS else 0.0

    def softplus(x):
        bx = a * x
        # x above the threshold (exp(bx) cannot overflow below it)
        return hy.select(hy.gt(bx, ir.SOFTPLUS_THRESHOLD), x, hy.log1p(hy.exp(bx)) / a)

    table: dict[str, Callable] = {
        "identity": lambda x: x,
        "tanh": hy.tanh,
        "sigmoid": hy.sigmoid,
        "relu": lambda x: hy.select(hy.lt(x, 0.0), hy.expression(0.0), x),  # NaN stays NaN
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
    heyoka expressions. With `params`, the fields in PAR_FIELDS become `par[i]` blocks, laid out
    before the walk in one order (see `to_heyoka`) starting at `par_base`; their values are
    `self.par_values` and `self.par_map[i] = (node, field, flat index)`."""

    def __init__(self, graph: ir.Graph, *, params: bool = False, mode: str = "eval",
                 ffnn: bool = True, par_base: int = 0):
        super().__init__(graph)
        if mode not in ("eval", "train"):
            raise ir.GraphError(f"mode {mode!r} is neither 'eval' nor 'train'", field="mode",
                                fix="eval: hard gates; train: softmax of the logits")
        self.hy = _hy()
        self.params, self.mode = params, mode
        self.chains: dict[str, FfnnChain] = {}
        self.members: set[str] = set()
        if ffnn:
            for c in find_ffnn_chains(self.graph):
                self.chains[c.head] = c
                self.members.update(c.nodes[1:])
        self.blocks: dict[tuple[str, str], np.ndarray] = {}
        values: list[np.ndarray] = []
        self.par_map: dict[int, tuple[str, str, int]] = {}
        if params:
            k = par_base
            for name in self.order:
                node = self.graph.nodes[name]
                for field in PAR_FIELDS.get(type(node), ()):
                    v = getattr(node, field)
                    if v is None:
                        continue
                    v = np.asarray(v, np.float64)
                    self.blocks[name, field] = _obj([self.hy.par[i] for i in
                                                     range(k, k + v.size)], v.shape)
                    self.par_map.update({k + j: (name, field, j) for j in range(v.size)})
                    values.append(v.ravel())
                    k += v.size
        self.par_values = np.concatenate(values) if values else np.zeros(0)

    def const(self, name: str, field: str) -> np.ndarray:
        """Node `name`'s `field`: its par[] block with params, else its float64 values."""
        if (name, field) in self.blocks:
            return self.blocks[name, field]
        return np.asarray(getattr(self.graph.nodes[name], field), dtype=np.float64)

    def dot(self, w_row, x) -> Any:
        hy = self.hy
        terms = [(wi if isinstance(wi, self.hy.expression) else float(wi)) * xi
                 for wi, xi in zip(w_row, x)]
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
                                    fix=f"build expressions from the smooth part of the graph "
                                        f"only, or {discrete_paths(self.graph)}")
        if node.stateful:
            raise ir.GraphError(f"{type(node).__name__} is stateful: it has no expression form",
                                node=name, field="type", fix=stateful_fix(self.graph))
        if type(node) not in heyoka_rule:
            raise ir.GraphError(f"{type(node).__name__} {name!r} has no heyoka form", node=name,
                                field="type", fix=f"heyoka supports "
                                f"{sorted(k.__name__ for k in heyoka_rule.rules)}; "
                                f"{discrete_paths(self.graph)}")
        return heyoka_rule.apply(self, name, node, values)

    def ffnn(self, chain: FfnnChain, x: np.ndarray) -> np.ndarray:
        """One heyoka.model.ffnn for the chain: nn_wb = all weights (row-major (out, in), layer
        by layer), then all biases (Linear layers: zeros that stay numbers even with params;
        no par[] is made for a bias the graph does not have)."""
        hy = self.hy
        dense = [layer.dense for layer in chain.layers]
        acts = []
        for layer in chain.layers:
            acts.append(_compose([activation(self.graph.nodes[a].fn, self.graph.nodes[a].alpha, a)
                                  for a in layer.activations]))
        sizes = [int(self.graph.nodes[d].weight.shape[0]) for d in dense]
        wb = [w for d in dense for w in self.const(d, "weight").ravel()]
        for d, size in zip(dense, sizes):
            wb += (list(self.const(d, "bias")) if isinstance(self.graph.nodes[d], ir.Affine)
                   else [0.0] * size)
        wb = [w if isinstance(w, hy.expression) else hy.expression(float(w)) for w in wb]
        out = hy.model.ffnn(list(x.ravel()), sizes[:-1], sizes[-1], acts, wb)
        return np.array(out, dtype=object)


def _obj(values, shape=None) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr if shape is None else arr.reshape(shape)


@heyoka_rule(ir.Output)
def _output(b, name, node, values):
    return values["input"]


@heyoka_rule(ir.Input)
def _input(b, name, node, values):  # Inputs are fed, never visited
    raise ir.GraphError("an Input node was not fed", node=name, fix="pass its variables")


@heyoka_rule(ir.Affine, ir.Linear)
def _dense(b, name, node, values):
    x = values["input"]
    w = b.const(name, "weight")
    rows = [b.dot(w[i], x) for i in range(w.shape[0])]
    if isinstance(node, ir.Affine):
        bias = b.const(name, "bias")
        rows = [r + (bi if isinstance(bi, b.hy.expression) else float(bi))
                for r, bi in zip(rows, bias)]
    return _obj(rows)


@heyoka_rule(ir.Scale)
def _scale(b, name, node, values):
    x = values["input"]
    s = b.const(name, "scale")
    return _obj([(si if isinstance(si, b.hy.expression) else float(si)) * xi
                 for si, xi in zip(s.ravel(), x.ravel())], x.shape)


@heyoka_rule(ir.Activation)
def _activation(b, name, node, values):
    x = values["input"]
    f = activation(node.fn, node.alpha, name)
    return _obj([f(xi) for xi in x.ravel()], x.shape)


@heyoka_rule(ir.Flatten)
def _flatten(b, name, node, values):
    x = values["input"]
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
def _logic(b, name, node, values):
    x = values["input"]
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
def _logic_tree(b, name, node, values):
    x = values["input"]
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
def _or_pool(b, name, node, values):
    """max over each window (exact, through heyoka's select); padding reads 0."""
    x = values["input"]
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
def _groupsum(b, name, node, values):
    x = values["input"]
    size = x.shape[0] // node.k
    return _obj([(b.hy.sum(list(x[c * size:(c + 1) * size])) + float(node.beta)) / float(node.tau)
                 for c in range(node.k)])


# --- everyday CNN / MLP kinds (ir/kinds/cnn.py); Clamp and MaxPool are not smooth -------------
def _number(b):
    """A constant as the builder keeps it: a par[] expression, or a float."""
    return lambda v: v if isinstance(v, b.hy.expression) else float(v)


@heyoka_rule(ir.ChannelAffine)
def _channel_affine(b, name, node, values):
    x = values["input"]
    w, c = b.const(name, "weight"), b.const(name, "bias")
    num = _number(b)
    rows = x.reshape(x.shape[0], -1)  # (channel, elements of that channel)
    return _obj([num(w[i]) * xi + num(c[i]) for i in range(rows.shape[0]) for xi in rows[i]],
                x.shape)


@heyoka_rule(ir.AdaptiveAvgPool2d)
def _adaptive_avg_pool(b, name, node, values):
    x = values["input"]
    c, h, w = x.shape
    oh, ow = node.output_size
    out = []
    for ch in range(c):
        for y0, y1 in adaptive_windows(h, oh):
            for x0, x1 in adaptive_windows(w, ow):
                cells = list(x[ch, y0:y1, x0:x1].ravel())
                out.append(b.hy.sum(cells) / float(len(cells)))
    return _obj(out, (c, oh, ow))


@heyoka_rule(ir.Concat)
def _concat(b, name, node, values):
    xs = [values[p] for p in operand_ports(node.n_inputs)]
    return np.stack(xs, node.axis) if node.stack else np.concatenate(xs, node.axis)


@heyoka_rule(ir.Binary)
def _binary(b, name, node, values):
    a, c = (values[p] for p in operand_ports(2))
    return a * c if node.fn == "mul" else a / c


@heyoka_rule(ir.Softmax)
def _softmax(b, name, node, values):
    x = values["input"]
    """exp(x_i) / sum_j exp(x_j) (log: x_i - log sum_j exp(x_j)) along the axis."""
    hy = b.hy
    moved = np.moveaxis(x, node.axis, -1)
    out = np.empty(moved.shape, dtype=object)
    for idx in np.ndindex(*moved.shape[:-1]):
        row = list(moved[idx])
        total = hy.sum([hy.exp(v) for v in row])
        out[idx] = [v - hy.log(total) if node.log else hy.exp(v) / total for v in row]
    return np.moveaxis(out, -1, node.axis)


@heyoka_rule(ir.LayerNorm)
def _layer_norm(b, name, node, values):
    x = values["input"]
    hy = b.hy
    m = int(np.prod(node.normalized_shape, dtype=np.int64))
    rows = x.reshape(-1, m)
    w = None if node.weight is None else b.const(name, "weight").reshape(-1)
    c = None if node.bias is None else b.const(name, "bias").reshape(-1)
    num = _number(b)
    out = []
    for row in rows:
        mean = hy.sum(list(row)) / float(m)
        var = hy.sum([(v - mean) * (v - mean) for v in row]) / float(m)
        inv = 1.0 / hy.sqrt(var + float(node.eps))
        for k, v in enumerate(row):
            y = (v - mean) * inv
            y = y * num(w[k]) if w is not None else y
            out.append(y + num(c[k]) if c is not None else y)
    return _obj(out, x.shape)


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
    """Graph -> (expressions, input variables), or with `params=True` (expressions, input
    variables, par values, par map).

    - `inputs`: heyoka expressions to use for the inputs' elements (all Input nodes in order,
      each flattened in C order); default fresh variables x0, x1, ... (one Input) or
      `<input>_<i>`.
    - `params`: the trainable fields (PAR_FIELDS: Affine weight and bias, Linear weight, Scale
      scale) become `heyoka.par[i]`. The order is one and the same whatever the other flags:
      nodes in the graph's evaluation order, within a node its fields in PAR_FIELDS order
      (weight before bias, as torch lists them), each field flattened in C order (a weight row
      by row, (out, in)). `values[i]` is par[i]'s value and `par_map[i] = (node, field, flat
      index)`; `write_params` puts trained values back. A Linear layer (no bias) gets no bias
      parameters: inside an MLP chain its bias slots in heyoka's ffnn are the constant 0.
    - `mode`: "eval" applies logic layers' hard gates, "train" their relaxed softmax mixture.
    - `ffnn`: map MLP chains to `heyoka.model.ffnn` (False: node by node, same values).

    The expressions are all Output nodes' elements, in order, each flattened in C order.
    """
    b = HeyokaBuilder(graph, params=params, mode=mode, ffnn=ffnn)
    stateful = [n for n in b.order if b.graph.nodes[n].stateful]
    if stateful:
        n = stateful[0]
        raise ir.GraphError(f"{type(b.graph.nodes[n]).__name__} is stateful: a graph with "
                            "neurons or delays has no expression form", node=n, field="type",
                            fix=stateful_fix(b.graph))
    feeds, flat = _input_vars(b, inputs)
    env = b.evaluate(feeds)
    exprs = [e for o in b.output_names for e in np.asarray(env[o]).ravel()]
    if params:
        return exprs, flat, b.par_values, b.par_map
    return exprs, flat


def ode_form_missing(graph: ir.Graph):
    """(node, why) for the first node with no ODE form here, or None when the whole graph has
    one (neurons, static nodes with a heyoka expression)."""
    for name, node in graph.flattened().nodes.items():
        if isinstance(node, ir.Neuron):
            continue
        if isinstance(node, ir.Delay):
            return name, ("is a Delay: a delay equation, which heyoka's Taylor integrators do "
                          "not solve")
        if node.stateful:
            return name, f"is a stateful {type(node).__name__} with no continuous-time form"
        if type(node) in NO_SMOOTH_FORM or type(node) not in heyoka_rule:
            return name, f"is a {type(node).__name__}, which has no heyoka expression"
    return None


def static_kinds() -> list:
    """The kinds an ODE system takes besides neurons: those with a smooth heyoka expression."""
    return [k for k in heyoka_rule.rules if k not in NO_SMOOTH_FORM and k is not ir.Input]


def stateful_fix(graph: ir.Graph) -> str:
    """Where a stateful graph can go instead: the ODE importer when every node has an ODE form,
    else the discrete-time paths (torch, C)."""
    missing = ode_form_missing(graph)
    if missing is None:
        return "use polyir.to_heyoka_ode(graph) (continuous time, exact spike times)"
    name, why = missing
    return f"the ODE path cannot take it either ({name!r} {why}); {discrete_paths(graph)}"


def discrete_paths(graph: ir.Graph) -> str:
    """The other ways to run the whole graph, named only where every node kind has a rule there
    (torch always is checked; the C backend when its rules are loaded)."""
    from .torch import torch_rule
    from ..ir.walk import TABLES
    kinds = {type(k) for k in graph.flattened().nodes.values()} - {ir.Input, ir.Output}
    ways = []
    if kinds <= set(torch_rule.rules):
        ways.append("polyir.to_torch(graph, dt=...)")
    if "lower" in TABLES and kinds <= set(TABLES["lower"].rules):
        ways.append("polyir.compile(graph, 'c')")
    if not ways:
        return "no polyir path runs every node of this graph; replace the unsupported node"
    return "run the whole graph with " + " or ".join(ways)


__all__ = ["heyoka_rule", "to_heyoka", "activation", "gate_coefficients", "HeyokaBuilder",
           "NO_SMOOTH_FORM", "use_compact_mode", "discrete_paths"]
