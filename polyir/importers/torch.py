"""Graph -> trainable torch.nn.Module.

`to_torch(graph)` builds one torch module per node with the rules in `torch_rule` (one per kind,
`@torch_rule(ir.Kind)`, each `rule(ctx, name, node, values) -> nn.Module` with ctx a
`BuildContext` and values the input ports' types), and a `GraphModule` that evaluates
them in the GraphWalker's topological order: several edges into a port are summed, recurrent edges
read the previous step's value (nothing at the first step).

Parameters are `nn.Parameter`s, so an optimiser trains them; logic layers are relaxed in train mode
and hard in eval mode; `.to(device, dtype)` and `state_dict` work as for any module.

dtype: float64 if any float array of the graph is float64, else float32 (or `dtype=` given); every
parameter is made that dtype and float inputs are cast to the module's current dtype.

Stateless graphs: `forward(*inputs)` takes the inputs in `graph.inputs` order, each (batch, *shape),
and returns a tensor (a tuple for several outputs). Stateful graphs (neurons, Delay):
`forward(*inputs, state=None) -> (y, state)` steps once; `run(*sequences)` runs (T, batch, *shape)
sequences and returns (T, batch, *shape) outputs. Neurons need `dt` (argument, else the graph's
`metadata["dt"]`), and use `discretization` "euler" (NIR's reference) or "exact" (see
polyir.nn.neurons).
"""
from __future__ import annotations

import dataclasses
import math
import re
import warnings

import numpy as np
import torch
import torch.fx
from torch import nn

from .. import ir
from .. import nn as pnn
from ..ir.errors import GraphError, PolyirWarning
from ..ir.types import Port
from ..ir.walk import GraphWalker, RuleTable
from ..nn.logic import hard_logits

__all__ = ["to_torch", "GraphModule", "StatefulGraphModule", "torch_rule", "BuildContext"]

torch_rule = RuleTable("torch")


@dataclasses.dataclass
class BuildContext:
    """What a rule may need beyond the node: its name, its resolved port types, the time step."""

    name: str
    inputs: dict[str, Port]
    output: Port | None
    dt: float | None
    discretization: str
    dtype: torch.dtype

    def need_dt(self) -> float:
        if self.dt is None:
            raise GraphError("this node needs a time step dt, and the graph's metadata has no 'dt'",
                             node=self.name, field="dt",
                             fix="pass polyir.to_torch(graph, dt=1e-4) (seconds), or set "
                                 "graph.metadata['dt']")
        return self.dt

    def tensor(self, array) -> torch.Tensor:
        """A float parameter array as a tensor of the module dtype."""
        return torch.from_numpy(np.array(array)).to(self.dtype)

    def in_shape(self, port: str = "input") -> tuple[int, ...]:
        return tuple(self.inputs[port].shape)


# --- rules ---------------------------------------------------------------------------------------
def _linear(weight, bias, ctx):
    out_f, in_f = weight.shape
    m = nn.Linear(in_f, out_f, bias=bias is not None, dtype=ctx.dtype)
    with torch.no_grad():
        m.weight.copy_(ctx.tensor(weight))
        if bias is not None:
            m.bias.copy_(ctx.tensor(bias))
    return m


@torch_rule(ir.Affine)
def _affine(ctx, name, node, values):
    return _linear(node.weight, node.bias, ctx)


@torch_rule(ir.Linear)
def _linear_rule(ctx, name, node, values):
    return _linear(node.weight, None, ctx)


@torch_rule(ir.Scale)
def _scale(ctx, name, node, values):
    return pnn.Scale(ctx.tensor(node.scale))


@torch_rule(ir.Threshold)
def _threshold(ctx, name, node, values):
    return pnn.Threshold(ctx.tensor(node.threshold))


@torch_rule(ir.Flatten)
def _flatten(ctx, name, node, values):
    # polyir counts dims without the batch dim, torch with it.
    def shift(d):
        return d + 1 if d >= 0 else d
    return nn.Flatten(shift(node.start_dim), shift(node.end_dim))


@torch_rule(ir.Conv1d, ir.Conv2d)
def _conv(ctx, name, node, values):
    cls = pnn.Conv1d if isinstance(node, ir.Conv1d) else pnn.Conv2d
    c_out, c_in_g = node.weight.shape[:2]
    m = cls(c_in_g * node.groups, c_out, tuple(node.weight.shape[2:]), stride=node.stride,
            pads=node.pads, dilation=node.dilation, groups=node.groups,
            bias=node.bias is not None, dtype=ctx.dtype)
    with torch.no_grad():
        m.weight.copy_(ctx.tensor(node.weight))
        if node.bias is not None:
            m.bias.copy_(ctx.tensor(node.bias))
    return m


@torch_rule(ir.SumPool2d)
def _sumpool(ctx, name, node, values):
    return pnn.SumPool2d(node.kernel_size, node.stride, node.padding)


@torch_rule(ir.AvgPool2d)
def _avgpool(ctx, name, node, values):
    return nn.AvgPool2d(node.kernel_size, node.stride, node.padding, count_include_pad=True)


@torch_rule(ir.Delay)
def _delay(ctx, name, node, values):
    dt = ctx.need_dt()
    steps = np.asarray(node.delay, np.float64) / dt
    if np.any(np.abs(steps - np.rint(steps)) > 1e-6 * np.maximum(1.0, np.abs(steps))):
        warnings.warn(f"node {ctx.name!r}: delays are not multiples of dt={dt:g}; rounded to "
                      "whole steps", PolyirWarning, stacklevel=2)
    return pnn.Delay(np.asarray(node.delay, np.float64), dt)


@torch_rule(*pnn.LAYERS)
def _neuron(ctx, name, node, values):
    params = {f: ctx.tensor(a) for f, a in node.parameters().items()}
    return pnn.LAYERS[type(node)](**params, **node.non_default_options(), dt=ctx.need_dt(),
                                  discretization=ctx.discretization)


@torch_rule(ir.Activation)
def _activation(ctx, name, node, values):
    return pnn.Activation(node.fn, node.alpha)


def _logits(node_logits, gates, ctx):
    if node_logits is not None:
        return ctx.tensor(node_logits)
    return hard_logits(gates, ctx.dtype)


@torch_rule(ir.LogicLayer)
def _logic_layer(ctx, name, node, values):
    m = pnn.LogicLayer(ctx.in_shape()[0], len(node.gate), connections=(node.a, node.b),
                       grad_factor=float(node.metadata.get("grad_factor", 1.0)))
    m.logits = nn.Parameter(_logits(node.logits, node.gate, ctx))
    return m


@torch_rule(ir.LogicTree2d)
def _logic_tree(ctx, name, node, values):
    k = node.leaves.shape[0]
    m = pnn.LogicTree2d(ctx.in_shape()[0], k, node.depth, node.kernel_size, node.stride,
                        node.padding)
    m.leaves.copy_(torch.from_numpy(np.array(node.leaves, dtype=np.int64)))
    m.logits = nn.Parameter(_logits(node.logits, node.gates, ctx))
    return m


@torch_rule(ir.OrPool2d)
def _orpool(ctx, name, node, values):
    return pnn.OrPool2d(node.kernel_size, node.stride, node.padding)


@torch_rule(ir.Binarize)
def _binarize(ctx, name, node, values):
    return pnn.Binarize(ctx.tensor(node.thresholds), node.axis,
                        straight_through=bool(node.metadata.get("straight_through", False)))


@torch_rule(ir.GroupSum)
def _groupsum(ctx, name, node, values):
    return pnn.GroupSum(node.k, node.tau, node.beta)


@torch_rule(ir.RuleSet)
def _ruleset(ctx, name, node, values):
    try:
        from ..nn.rules import RuleLayer
    except ImportError as exc:
        raise GraphError(f"RuleSet needs polyir.nn.rules.RuleLayer, which cannot be imported "
                         f"({exc})", node=ctx.name, field="type",
                         fix="install the rules layer (polyir/nn/rules.py)") from exc
    layer = RuleLayer.from_ir(node)
    return layer.to(ctx.dtype)


@torch_rule(ir.Output)
def _output(ctx, name, node, values):
    return nn.Identity()


# --- everyday CNN / MLP kinds (ir/kinds/cnn.py) --------------------------------------------------
@torch_rule(ir.ChannelAffine)
def _channel_affine(ctx, name, node, values):
    return pnn.ChannelAffine(ctx.tensor(node.weight), ctx.tensor(node.bias))


@torch_rule(ir.MaxPool1d, ir.MaxPool2d)
def _maxpool(ctx, name, node, values):
    cls = nn.MaxPool1d if isinstance(node, ir.MaxPool1d) else nn.MaxPool2d
    return cls(node.kernel_size, node.stride, node.padding)


@torch_rule(ir.AdaptiveAvgPool2d)
def _adaptive_avgpool(ctx, name, node, values):
    return nn.AdaptiveAvgPool2d(node.output_size)


@torch_rule(ir.Concat)
def _concat(ctx, name, node, values):
    return pnn.Concat(node.axis, node.stack)


@torch_rule(ir.Binary)
def _binary(ctx, name, node, values):
    return pnn.Binary(node.fn)


@torch_rule(ir.Clamp)
def _clamp(ctx, name, node, values):
    return pnn.Clamp(node.min, node.max)


@torch_rule(ir.Softmax)
def _softmax(ctx, name, node, values):
    dim = node.axis + 1 if node.axis >= 0 else node.axis  # torch counts the batch dim
    return nn.LogSoftmax(dim) if node.log else nn.Softmax(dim)


@torch_rule(ir.LayerNorm)
def _layer_norm(ctx, name, node, values):
    affine = node.weight is not None or node.bias is not None
    m = nn.LayerNorm(node.normalized_shape, eps=node.eps, elementwise_affine=affine,
                     bias=node.bias is not None, dtype=ctx.dtype)
    with torch.no_grad():
        if node.weight is not None:
            m.weight.copy_(ctx.tensor(node.weight))
        elif affine:  # a bias without a weight: torch's weight, fixed at one
            m.weight.requires_grad_(False)
        if node.bias is not None:
            m.bias.copy_(ctx.tensor(node.bias))
    return m


# --- the module ----------------------------------------------------------------------------------
def _graph_dtype(graph: ir.Graph) -> torch.dtype:
    def arrays(node):
        for f in dataclasses.fields(node):
            v = getattr(node, f.name)
            if isinstance(v, np.ndarray):
                yield v
            elif isinstance(v, dict) and f.name != "metadata":
                yield from (a for a in v.values() if isinstance(a, np.ndarray))

    for node in graph.nodes.values():
        if dataclasses.is_dataclass(node) and any(a.dtype == np.float64 for a in arrays(node)):
            return torch.float64
    return torch.float32


def _is_tracing() -> bool:
    from torch.fx import _symbolic_trace as st
    check = getattr(st, "is_fx_symbolic_tracing", None)
    if check is not None:
        return check()
    return bool(getattr(st, "_is_fx_tracing_flag", False))  # pragma: no cover - older torch


class GraphModule(nn.Module):
    """A polyir Graph as a torch module (see the polyir.importers.torch docstring).

    `layers` holds one submodule per node (keys are node names with '.' replaced by '__');
    `layer(name)` looks one up by its graph name. `input_names` / `output_names` give the order of
    forward's arguments and results.
    """

    def __init__(self, graph: ir.Graph, dt: float | None = None, discretization: str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if discretization is None:  # what the exporter recorded, else NIR's reference
            discretization = graph.metadata.get("discretization", "euler")
        if discretization not in ir.DISCRETIZATIONS:
            raise GraphError(f"unknown discretization {discretization!r}", field="discretization",
                             fix=f"use one of {ir.DISCRETIZATIONS}")
        if dt is None:
            dt = graph.metadata.get("dt")
        if dt is not None:
            if isinstance(dt, bool) or not isinstance(dt, (int, float, np.number)) or not (
                    math.isfinite(float(dt)) and float(dt) > 0):
                raise GraphError(f"dt={dt!r} is not a positive number of seconds", field="dt",
                                 fix="pass dt=1e-4 (for example)")
            dt = float(dt)
        self.graph = graph
        self.dt = dt
        self.discretization = discretization
        walker = GraphWalker(graph)
        self._walker = walker
        dtype = dtype or _graph_dtype(walker.graph)
        self.register_buffer("_dtype_marker", torch.zeros(0, dtype=dtype), persistent=False)
        self.layers = nn.ModuleDict()
        self._keys: dict[str, str] = {}
        nodes = walker.graph.nodes
        self._stateful = [n for n in walker.order if type(nodes[n]).stateful]
        self._recurrent_sources = sorted({e[0] for e in walker.recurrent_edges})
        for name in walker.order:
            node = nodes[name]
            if isinstance(node, ir.Input):
                continue
            rule = torch_rule.lookup(name, node)
            ins = {p: walker.types[srcs[0]] for p, srcs in
                   {**walker.recurrent[name], **walker.inputs[name]}.items()}
            ctx = BuildContext(name, ins, walker.types.get(name), dt, discretization, dtype)
            try:
                module = rule(ctx, name, node, ins)
            except GraphError:
                raise
            except Exception as exc:
                raise GraphError(f"cannot build the torch layer: {exc}", node=name,
                                 field="type", fix="check the node's parameters") from exc
            key = self._key_for(name)
            self.layers[key] = module

    def _key_for(self, name: str) -> str:
        key = re.sub(r"[^0-9A-Za-z_]", "_", name.replace(".", "__")) or "node"
        if key in self.layers or hasattr(nn.ModuleDict(), key) or key.startswith("_"):
            key = "n_" + key
        base, i = key, 1
        while key in self.layers:
            key, i = f"{base}_{i}", i + 1
        self._keys[name] = key
        return key

    # --- views ---------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return self._walker.input_names

    @property
    def output_names(self) -> list[str]:
        return self._walker.output_names

    @property
    def stateful(self) -> bool:
        """True when the graph holds neurons or delays: forward then returns (y, state)."""
        return bool(self._stateful) or bool(self._recurrent_sources)

    def layer(self, name: str) -> nn.Module:
        """The torch module of graph node `name` (flattened names for nested graphs)."""
        if name not in self._keys:
            raise GraphError("no such node (Input nodes have no layer)", node=name,
                             fix=f"use one of {sorted(self._keys)}")
        return self.layers[self._keys[name]]

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype_marker.dtype

    # --- evaluation ----------------------------------------------------------------------------
    def _prepare(self, inputs) -> dict:
        names = self.input_names
        if isinstance(inputs, torch.fx.Proxy):  # fx traces *inputs as one proxy
            inputs = tuple(inputs[i] for i in range(len(names)))
        if len(inputs) != len(names):
            raise GraphError(f"the graph takes {len(names)} input(s) {names}, got {len(inputs)}",
                             field="inputs", fix="pass one tensor per Input node, in that order")
        feeds = {}
        tracing = _is_tracing()
        for name, x in zip(names, inputs):
            node = self._walker.graph.nodes[name]
            if node.elem == "relation" or tracing:
                feeds[name] = x
                continue
            if not isinstance(x, torch.Tensor):
                x = torch.as_tensor(np.asarray(x), device=self._dtype_marker.device)
            if not (x.is_floating_point() or x.dtype in _INT_DTYPES):
                raise GraphError(f"input has dtype {x.dtype}; the graph computes on real "
                                 "numbers", node=name, field="input",
                                 fix="pass real values (x.real, or a float tensor)")
            want = tuple(node.shape)
            if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
                raise GraphError(f"input has shape {tuple(x.shape)}, expected (batch, "
                                 f"{', '.join(map(str, want))})", node=name, field="shape",
                                 fix="give a batch dim first (x.unsqueeze(0) for one sample)"
                                 if tuple(x.shape) == want else "feed the declared shape")
            if x.dtype != self.dtype:
                x = x.to(self.dtype)
            if node.elem == "bit" and not self.training:  # the bit rule (ir.Input)
                bad = (x != 0) & (x != 1)
                if bool(bad.any()):
                    raise node.non_bit_error(name, x[bad][0].item())
            feeds[name] = x
        return feeds

    def _evaluate(self, feeds: dict, state: dict | None):
        walker = self._walker
        nodes = walker.graph.nodes
        batch = None
        for v in feeds.values():
            if isinstance(v, torch.Tensor):
                batch = v.shape[0]
                break
        self._check_state(state, batch)
        node_states = {} if state is None else state["nodes"]
        previous = None if state is None else state["recurrent"]
        new_states = {}
        env = dict(feeds)
        if batch == 0 and not _is_tracing():  # nothing to compute: empty outputs, same state
            env.update({o: torch.zeros((0,) + tuple(walker.types[o].shape), dtype=self.dtype,
                                       device=self._dtype_marker.device)
                        for o in self.output_names})
            return env, state if state is not None else {"nodes": {}, "recurrent": {}}
        for name in walker.order:
            if name in feeds:
                continue
            node = nodes[name]
            module = self.layers[self._keys[name]]
            try:
                values = walker.gather(env, name, previous)
                for port, srcs in walker.recurrent[name].items():
                    if port not in values:  # first step: the delayed edge carries zeros
                        shape = (batch,) + tuple(walker.types[srcs[0]].shape)
                        values[port] = torch.zeros(shape, dtype=self.dtype,
                                                   device=self._dtype_marker.device)
                if isinstance(node, ir.RuleSet):
                    env[name] = module(values)
                elif "input" not in node.in_ports():  # operands on input_0, input_1, ...
                    env[name] = module(*(values[p] for p in node.in_ports()))
                elif type(node).stateful:
                    try:
                        y, s = module(values["input"], node_states.get(name))
                    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
                        if node_states.get(name) is None:
                            raise
                        raise GraphError(f"the state given for this node does not fit it "
                                         f"({type(exc).__name__}: {exc})", node=name,
                                         field="state", fix=_STATE_FIX) from None
                    env[name] = y
                    new_states[name] = s
                else:
                    env[name] = module(values["input"])
            except Exception as exc:
                exc.add_note(f"while evaluating node {name!r} ({type(node).__name__})")
                raise
        new_state = {"nodes": new_states,
                     "recurrent": {s: env[s] for s in self._recurrent_sources}}
        return env, new_state

    def _check_state(self, state, batch) -> None:
        """A state must be one this module returned, for the same batch size."""
        if state is None or _is_tracing():
            return
        if (not isinstance(state, dict) or set(state) != {"nodes", "recurrent"}
                or not isinstance(state["nodes"], dict)
                or not isinstance(state["recurrent"], dict)):
            raise GraphError(f"state must be None or the dict a previous call returned "
                             f"(keys 'nodes', 'recurrent'), got {_brief(state)}", field="state",
                             fix=_STATE_FIX)
        unknown = sorted(set(state["nodes"]) - set(self._walker.graph.nodes)
                         | set(state["recurrent"]) - set(self._recurrent_sources))
        if unknown:
            raise GraphError(f"state names nodes this graph does not have: {unknown}",
                             field="state", fix=_STATE_FIX)
        for name, value in state["nodes"].items():
            parts = tuple(value) if isinstance(value, tuple) else (value,)
            tail = (batch,) + tuple(self._walker.types[name].shape)  # (..., batch, features)
            if not all(isinstance(t, torch.Tensor) and not t.is_complex()
                       and tuple(t.shape[-len(tail):]) == tail for t in parts):
                raise GraphError(f"state of node {name!r} should hold real tensors of shape "
                                 f"(..., {', '.join(map(str, tail))}), got {_brief(value)}",
                                 node=name, field="state", fix=_STATE_FIX)
        for name, value in state["recurrent"].items():
            want = (batch,) + tuple(self._walker.types[name].shape)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != want:
                raise GraphError(f"state of node {name!r} should be a tensor of shape {want}, "
                                 f"got {_brief(value)}", node=name, field="state",
                                 fix=_STATE_FIX)

    def _results(self, env):
        outs = [env[o] for o in self.output_names]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def forward(self, *inputs):
        """Stateless graph: outputs for (batch, *shape) inputs in `input_names` order."""
        env, _ = self._evaluate(self._prepare(inputs), None)
        return self._results(env)

    def step(self, *inputs, state: dict | None = None):
        """One time step: (outputs, new state), also for a stateless graph (state stays empty)."""
        env, new_state = self._evaluate(self._prepare(inputs), state)
        return self._results(env), new_state

    def run(self, *sequences, state: dict | None = None, return_state: bool = False):
        """Run (T, batch, *shape) sequences (one per input) step by step, carrying the state;
        returns (T, batch, *shape) outputs (a tuple for several outputs), plus the final state
        with return_state=True."""
        if len(sequences) != len(self.input_names):
            raise GraphError(f"the graph takes {len(self.input_names)} input sequence(s), got "
                             f"{len(sequences)}", field="inputs",
                             fix="pass one (T, batch, ...) tensor per Input node")
        seqs = [s if isinstance(s, torch.Tensor) else torch.as_tensor(np.asarray(s))
                for s in sequences]
        steps = {int(s.shape[0]) for s in seqs}
        if len(steps) != 1:
            raise GraphError(f"input sequences have different lengths {sorted(steps)}",
                             field="inputs", fix="give every sequence the same T")
        for name, s in zip(self.input_names, seqs):
            want = tuple(self._walker.graph.nodes[name].shape)
            if s.ndim != len(want) + 2 or tuple(s.shape[2:]) != want:
                raise GraphError(f"sequence has shape {tuple(s.shape)}, expected (T, batch, "
                                 f"{', '.join(map(str, want))})", node=name, field="shape",
                                 fix="stack time first, then batch")
        outs = []
        for t in range(steps.pop()):
            y, state = self.step(*(s[t] for s in seqs), state=state)
            outs.append(y if isinstance(y, tuple) else (y,))
        if outs:
            stacked = tuple(torch.stack(col) for col in zip(*outs))
        else:
            stacked = tuple(torch.zeros((0,) + tuple(seqs[0].shape[1:2]) +
                                        tuple(self._walker.types[o].shape), dtype=self.dtype)
                            for o in self.output_names)
        result = stacked[0] if len(stacked) == 1 else stacked
        return (result, state) if return_state else result

    def extra_repr(self):
        return (f"inputs={self.input_names}, outputs={self.output_names}"
                + (f", dt={self.dt:g}, discretization={self.discretization!r}"
                   if self.dt is not None else ""))


_STATE_FIX = ("pass state=None for the first step, then the state the previous call returned "
              "(for the same batch size)")
_INT_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _brief(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class StatefulGraphModule(GraphModule):
    """A graph with neurons or delays: `forward(*inputs, state=None) -> (outputs, state)` steps
    once; the state is {"nodes": {name: neuron state}, "recurrent": {name: last output}}, zeros
    when None."""

    def forward(self, *inputs, state: dict | None = None):
        env, new_state = self._evaluate(self._prepare(inputs), state)
        return self._results(env), new_state


def to_torch(graph, dt: float | None = None, discretization: str | None = None,
             dtype: torch.dtype | None = None) -> GraphModule:
    """Graph (or a path to a .h5 / .nir file) -> GraphModule, a trainable torch module with the
    graph's outputs. See the module docstring for dt, discretization, dtype and the call forms."""
    if isinstance(graph, (str, bytes)) or hasattr(graph, "__fspath__"):
        from ..ir.h5 import load
        graph = load(graph)
    if not isinstance(graph, ir.Graph):
        raise GraphError(f"to_torch takes a polyir Graph, got {type(graph).__name__}",
                         field="graph", fix="load or build a polyir.Graph first "
                                            "(polyir.from_nir for a NIR graph)")
    flat = graph.flattened()
    cls = StatefulGraphModule if flat.stateful else GraphModule
    return cls(graph, dt=dt, discretization=discretization, dtype=dtype)
