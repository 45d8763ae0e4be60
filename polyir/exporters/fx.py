"""torch.nn.Module -> polyir Graph by torch.fx tracing.

    g = polyir.export(model, example_input)

How it works:
1. `PolyirTracer` (a torch.fx Tracer) treats every module a handler knows as a leaf: one
   `call_module` node. Everything else is traced through.
2. The traced graph runs once on the example input (eval mode, no grad) to record every value's
   shape; a module's handler sees its example input and output (`ExportContext`).
3. Each fx node becomes polyir: `call_module` -> the module's handler (BatchNorm folds into the
   layer before it through `ExportContext.producer`); `call_function` / `call_method` -> the rule
   of polyir.exporters.functions for that function (activations, arithmetic, cat / stack,
   pooling, softmax, clamp, flatten, ...); `a + b` of two traced values -> fan-in edges (several
   edges into one port are summed, NIR's rule). Anything else fails with a GraphError naming the
   fx node, saying what polyir covers (docs/export.md) and how to register a handler; the
   messages live in polyir.exporters.refusals.

Stateful models (modules returning `(out, state)`, and one-step models `forward(x, state) ->
(y, new_state)`) follow the protocol in polyir.exporters.state. torch functions and Tensor
methods map through the table in polyir.exporters.functions; docs/export.md lists everything
that exports and everything refused.

The graph records the input shape and dtype (`metadata['input_shape']`, `['input_dtype']`), and
`dt` (and the discretisation) of its neurons. An Input that feeds a logic kind directly is
declared elem='bit' (the example input must then be 0/1).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from .. import ir
from ..ir.errors import GraphError
from .functions import lookup_function, target_name
from .handlers import Handler, load_builtin, lookup
from .refusals import (EXPORT_DOC, is_refused_leaf, module_refusal, time_loop_refusal,
                       trace_refusal)
from .state import (MISSING, META, Pair, Pending, StateProtocol, StateRef, StateView, Token,
                    Value, has_missing, leaves, signature, stateful_result)

__all__ = ["export", "ExportContext", "PolyirTracer"]

# --- the tracer ----------------------------------------------------------------------------------
class PolyirTracer(fx.Tracer):
    """An fx Tracer whose leaves are the modules a handler knows (plus fx's default leaves,
    torch.nn's own modules, which fail later if no handler knows them).

    Which modules are known is decided before tracing (`known`: ids of the root's submodules
    that have a handler), because while fx traces, a module's parameters read as proxies and a
    duck-typed recogniser would see those instead of tensors."""

    def __init__(self, known: set[int] | None = None):
        super().__init__()
        self.known = known
        self.module_stack_names: list[str] = []
        self.last_node: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        known = id(m) in self.known if self.known is not None else lookup(m) is not None
        return known or is_refused_leaf(m) or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        name = self.path_of_module(m)
        self.module_stack_names.append(f"{name} ({type(m).__name__})")
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.module_stack_names.pop()

    def create_node(self, *args, **kwargs):
        node = super().create_node(*args, **kwargs)
        self.last_node = node.name
        return node


def _leaf_root(model: nn.Module, n_inputs: int) -> tuple[nn.Module, fx.Graph]:
    """A root module that is itself a leaf: a container holding it and a one-call fx graph."""
    name = type(model).__name__.lower() or "model"
    root = nn.Module()
    root.add_module(name, model)
    graph = fx.Graph()
    args = tuple(graph.placeholder("input" if n_inputs == 1 else f"input_{i}")
                 for i in range(n_inputs))
    graph.output(graph.call_module(name, args))
    return root, graph


# --- the example run -----------------------------------------------------------------------------
_SUMS = {"add", "iadd", "add_", "__add__", "__radd__", "__iadd__"}

class _Recorder(fx.Interpreter):
    """Runs the traced module and keeps every node's value. Nodes fed by a MISSING value give
    MISSING (a sum gives its known operand)."""

    def __init__(self, gm):
        super().__init__(gm, garbage_collect_values=False)
        self.extra_traceback = False  # our errors name the fx node already
        self.values: dict[str, Any] = {}

    def run_node(self, n):
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            if n.op in ("call_module", "call_function", "call_method") and (
                    has_missing(args) or has_missing(kwargs)):
                is_add = (n.target if isinstance(n.target, str)
                          else getattr(n.target, "__name__", "")) in _SUMS
                known = [a for a in args[:2] if a is not MISSING]
                result = known[0] if is_add and known else MISSING
            else:
                try:
                    result = getattr(self, n.op)(n.target, args, kwargs)
                except GraphError:
                    raise
                except Exception as exc:
                    what = f"{n.op} {target_name(n)}"
                    shapes = ", ".join(str(tuple(a.shape)) for a in args
                                       if isinstance(a, torch.Tensor))
                    raise GraphError(f"running the model on the example input failed at fx node "
                                     f"{n.name!r} ({what}, given {shapes or 'no tensor'}): "
                                     f"{str(exc).strip()}", node=n.name, field="input",
                                     fix="pass an example input shaped as the model expects, "
                                         "batch dim first") from exc
        self.values[n.name] = result
        return result


# --- the handler's view --------------------------------------------------------------------------
class ExportContext:
    """What a handler sees besides the module.

    name: the polyir node name it becomes; fx_node: the fx node's name; target: the module's
    qualified name; input / output: the example tensors (batch first; for (out, state) modules
    output is out); input_shape / output_shape: shapes without the batch dim; input_elem: 'real'
    or 'bit' (what feeds it); float_dtype: the numpy float dtype of the model's values.
    """

    def __init__(self, exporter: "_Exporter", n: fx.Node, name: str, module, inp, out):
        self._exporter, self._node = exporter, n
        self.name, self.fx_node, self.target = name, n.name, str(n.target)
        self.module, self.input, self.output = module, inp, out

    @property
    def input_shape(self) -> tuple:
        return tuple(int(s) for s in self.input.shape[1:])

    @property
    def output_shape(self) -> tuple:
        return tuple(int(s) for s in self.output.shape[1:])

    @property
    def input_elem(self) -> str | None:
        return self._exporter.elem_of(self._exporter.env[self._node.args[0].name])

    @property
    def float_dtype(self):
        return self._exporter.float_dtype

    def array(self, t, dtype=None) -> np.ndarray:
        """A tensor (or array) as a fresh numpy array, float dtype kept unless `dtype` is given."""
        if isinstance(t, torch.Tensor):
            a = t.detach().cpu()
            if a.dtype == torch.bfloat16 or a.dtype == torch.float16:
                a = a.float()
            a = a.numpy()
        else:
            a = np.asarray(t)
        return np.array(a, dtype=dtype, copy=True)

    def error(self, message: str, field: str | None = None, fix: str | None = None) -> GraphError:
        where = f"module {self.target!r} ({type(self.module).__name__}), fx node {self.fx_node!r}"
        return GraphError(f"{where}: {message}", node=self.name, field=field, fix=fix)

    def set_metadata(self, key: str, value) -> None:
        """Set a graph metadata entry; a different value from another node is an error."""
        self._exporter.set_metadata(key, value, self)

    def producer(self) -> tuple[str, Any] | None:
        """(name, node) of the polyir node that alone computes this module's input and feeds
        nothing else, or None (see `replace_producer`)."""
        name = self._exporter.sole_producer(self._node)
        return None if name is None else (name, self._exporter.graph.nodes[name])

    def replace_producer(self, node) -> None:
        """Replace the node `producer()` named (folding this module into it); the handler then
        returns None, so this module's value is the producer's."""
        name, _ = self.producer()
        self._exporter.graph.nodes[name] = node


# --- the converter -------------------------------------------------------------------------------
class _Exporter(StateProtocol):
    def __init__(self, model: nn.Module, inputs: tuple, input_names, input_elem):
        self.model = model
        self.inputs = inputs
        self.input_names_arg = input_names
        self.input_elem_arg = input_elem
        self.graph = ir.Graph()
        self.env: dict[str, Any] = {}
        self.node_delay: dict[str, int] = {}
        self.edges: list[tuple] = []  # (term_ref, delay, dst, port)
        self.metadata: dict[str, Any] = {}
        self.metadata_from: dict[str, str] = {}
        self.token_inputs: dict[str, Any] = {}  # call node -> state arg value
        self.float_dtype = np.float32
        for x in inputs:
            if x.is_floating_point():
                self.float_dtype = np.dtype(str(x.dtype).replace("torch.", "")).type
                break

    # --- bookkeeping ---------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        base = base.replace("/", "_") or "node"
        name, i = base, 1
        while name in self.graph.nodes:
            name, i = f"{base}_{i}", i + 1
        return name

    def set_metadata(self, key, value, ctx):
        if key in self.metadata and self.metadata[key] != value:
            raise ctx.error(f"{key}={value!r} differs from {self.metadata[key]!r} of "
                            f"{self.metadata_from[key]!r}", field=key,
                            fix=f"give every module the same {key}")
        self.metadata[key] = value
        self.metadata_from[key] = ctx.name

    def elem_of(self, value) -> str | None:
        if not isinstance(value, Value):
            return None
        types = self.graph.infer_types(strict=False)
        for ref, _ in value.terms:
            if isinstance(ref, str) and isinstance(self.graph.nodes.get(ref), ir.Input):
                x = self.inputs[self.graph.inputs.index(ref)]
                bits = self.input_elem_arg != "real" and bool(((x == 0) | (x == 1)).all())
                return "bit" if bits else "real"
            if isinstance(ref, str) and ref in types:
                return types[ref].elem
        return None

    def add_node(self, name: str, node, value: Value, n: fx.Node) -> Value:
        """Add `node` fed by `value`; returns the node's value."""
        if isinstance(node, ir.Graph):
            return self.add_fragment(name, node, value, n)
        if isinstance(node, (list, tuple)):
            for i, k in enumerate(node):
                value = self.add_node(name if i == 0 else self.unique(name), k, value, n)
            return value
        if not isinstance(node, (ir.Graph, *ir.KINDS.values())) or isinstance(node, (ir.Input,
                                                                                    ir.Output)):
            raise GraphError(f"fx node {n.name!r}: the handler returned {node!r}, not a polyir "
                             "node kind", node=name, field="type",
                             fix="return a polyir kind (polyir.Affine(...), ...), a Graph "
                                 "fragment, a list of kinds, or None to skip")
        name = self.unique(name)
        self.graph.add(name, node)
        delays = {d for _, d in value.terms}
        delay = 1 if delays == {1} else 0
        self.node_delay[name] = delay
        for ref, d in value.terms:
            self.edge(ref, d, name, "input")
        return Value(((name, delay),))

    def add_operands(self, name: str, node, values: list, n: fx.Node) -> Value:
        """Add a multi-operand `node` (Concat, Binary): values[i] feeds port input_i."""
        name = self.unique(name)
        self.graph.add(name, node)
        terms = [t for v in values for t in v.terms]
        delay = 1 if {d for _, d in terms} == {1} else 0
        self.node_delay[name] = delay
        for port, v in zip(node.in_ports(), values):
            for ref, d in v.terms:
                self.edge(ref, d, name, port)
        return Value(((name, delay),))

    def sole_producer(self, n: fx.Node) -> str | None:
        """The polyir node that alone computes the input of call `n`, when nothing else reads
        it (so that a following BatchNorm may be folded into it); else None."""
        src = n.args[0] if n.args else None
        if not isinstance(src, fx.Node) or len(src.users) != 1:
            return None
        v = self.env.get(src.name)
        if not isinstance(v, Value) or len(v.terms) != 1:
            return None
        ref, delay = v.terms[0]
        if delay or not isinstance(ref, str) or ref not in self.graph.nodes:
            return None
        if any(e[0] == ref for e in self.graph.edges) or ref in self.graph.inputs:
            return None
        return ref

    def edge(self, ref, delay: int, dst: str, port: str = "input") -> None:
        """Record an edge; pending ones (state read back) are connected at the end."""
        self.edges.append((ref, delay, dst, port))
        if isinstance(ref, str):
            self.graph.connect(ref, dst, None if port == "input" else port)

    def add_fragment(self, name: str, frag: ir.Graph, value: Value, n: fx.Node) -> Value:
        if len(frag.inputs) != 1 or len(frag.outputs) != 1:
            raise GraphError(f"fx node {n.name!r}: a handler's Graph fragment needs one Input and "
                             f"one Output, has {len(frag.inputs)} and {len(frag.outputs)}",
                             node=name, field="nodes", fix="return a one-in, one-out fragment")
        frag = frag.flattened()
        (fin,), (fout,) = frag.inputs, frag.outputs
        names = {}
        for inner, node in frag.nodes.items():
            if inner in (fin, fout):
                continue
            names[inner] = self.unique(f"{name}_{inner}")
            self.graph.add(names[inner], node)
        pending = {}
        for e in frag.edges:
            pending.setdefault(e[1], []).append(e)
        # delays: a fragment node is late only when everything feeding the fragment is
        delay = 1 if {d for _, d in value.terms} == {1} else 0
        for inner in names.values():
            self.node_delay[inner] = delay
        out_terms = []
        for e in frag.edges:
            port = e[2] if len(e) > 2 else "input"
            if e[1] == fout:
                if e[0] == fin:
                    out_terms.extend(value.terms)
                else:
                    out_terms.append((names[e[0]], delay))
            elif e[0] == fin:
                for ref, d in value.terms:
                    self.edge(ref, d, names[e[1]], port)
            else:
                self.edge(names[e[0]], delay, names[e[1]], port)
        return Value(tuple(out_terms))

    # --- argument conversion -------------------------------------------------------------------
    def value_of(self, arg, n: fx.Node, what: str = "input") -> Value:
        if not isinstance(arg, fx.Node):
            raise GraphError(f"fx node {n.name!r} ({target_name(n)}) takes the constant {arg!r} "
                             f"as its {what}; polyir graphs carry only values computed from the "
                             "inputs", node=n.name, field="input",
                             fix="compute it in a module with a handler, or fold it into a layer")
        v = self.env[arg.name]
        if isinstance(v, Value):
            return v
        if isinstance(v, Pair):
            raise GraphError(f"fx node {n.name!r} uses the (out, state) pair of {arg.name!r} as "
                             "a tensor", node=n.name, field="input",
                             fix="unpack it first: out, state = module(x, state)")
        if isinstance(v, StateRef):
            leaf = self.state_leaves.get(v.path)
            if leaf is None:
                raise GraphError(f"fx node {n.name!r} reads state{list(v.path)}, which the model "
                                 "does not return in its new state", node=n.name, field="state",
                                 fix="return (outputs, new_state) with new_state laid out like "
                                     "state")
            if leaf[0] == "token":
                raise GraphError(f"fx node {n.name!r} uses state{list(v.path)}, the internal state "
                                 f"of {leaf[1]!r}, as a tensor", node=n.name, field="state",
                                 fix="pass a module's own state back only to that module")
            return Value(((Pending(v.path), 1),))
        if isinstance(v, Token):
            raise GraphError(f"fx node {n.name!r} uses the internal state of {v.fx_node!r} as a "
                             "tensor", node=n.name, field="state",
                             fix="use the module's output ([0]), not its state ([1])")
        kind = "a tensor constant or parameter" if self.node_ops.get(arg.name) == "get_attr" \
            else "a shape or size"
        raise GraphError(f"fx node {n.name!r} ({target_name(n)}) takes {kind} ({arg.name!r}) as "
                         f"its {what}; polyir graphs carry only values computed from the inputs",
                         node=n.name, field="input",
                         fix="wrap that computation in a module and register a handler for it")

    # --- the walk ------------------------------------------------------------------------------
    def run(self, gm: fx.GraphModule, fx_graph: fx.Graph, state_name: str | None,
            n_inputs: int) -> ir.Graph:
        nodes = list(fx_graph.nodes)
        self.node_ops = {n.name: n.op for n in nodes}
        out_node = nodes[-1]
        out_struct = out_node.args[0]
        self.pair_nodes = self._pair_nodes(nodes)
        y_struct = self.split_outputs(out_struct, state_name)
        example = self._example_run(gm, state_name, n_inputs, nodes)
        self.example = example
        placeholders = [n for n in nodes if n.op == "placeholder"]
        names = self._input_names(placeholders[:n_inputs])
        for n in nodes:
            self._convert(n, example, placeholders, names, state_name, n_inputs)
        self._outputs(y_struct, example)
        self._check_state_tokens(state_name)
        return self._finish()

    def _example_run(self, gm, state_name, n_inputs, nodes) -> dict:
        modes = {m: m.training for m in gm.modules()}
        gm.eval()
        try:
            with torch.no_grad():
                leaves = {p: (None if kind == "token" else MISSING)
                          for p, (kind, _) in self.state_leaves.items()}
                args = []
                for i, p in enumerate(n for n in nodes if n.op == "placeholder"):
                    if i < n_inputs:
                        args.append(self.inputs[i])
                    elif p.target == state_name:  # the whole state may be one leaf
                        args.append(leaves[()] if () in leaves else StateView(leaves))
                    else:
                        args.append(p.args[0] if p.args else None)
                rec = _Recorder(gm)
                rec.run(*args)
                values = rec.values
                late = {p: src for p, (kind, src) in self.state_leaves.items() if kind == "value"}
                if late:
                    for p, src in late.items():
                        v = values.get(src)
                        if not isinstance(v, torch.Tensor):
                            raise GraphError(f"state{list(p)} is computed from state read back "
                                             "(a delay of two steps or more)", node=src,
                                             field="state", fix="return values computed in this "
                                                                "step as the new state")
                        leaves[p] = torch.zeros_like(v)
                    args = [leaves[()] if isinstance(a, type(MISSING)) and () in leaves else a
                            for a in args]
                    rec = _Recorder(gm)
                    rec.run(*args)
                    values = rec.values
        finally:
            for m, t in modes.items():
                m.train(t)
        return values

    def _input_names(self, placeholders) -> list[str]:
        if self.input_names_arg is not None:
            names = [str(s) for s in self.input_names_arg]
            if len(names) != len(placeholders) or len(set(names)) != len(names):
                raise GraphError(f"input_names={self.input_names_arg!r} must name the "
                                 f"{len(placeholders)} input(s) uniquely", field="input_names",
                                 fix=f"pass {len(placeholders)} distinct names")
            return names
        if len(placeholders) == 1:
            return ["input"]
        return [p.name for p in placeholders]

    def _convert(self, n, example, placeholders, names, state_name, n_inputs):
        op = n.op
        if op == "placeholder":
            i = placeholders.index(n)
            if i < n_inputs:
                x = self.inputs[i]
                name = self.unique(names[i])
                self.graph.add(name, ir.Input(tuple(int(s) for s in x.shape[1:])))
                self.node_delay[name] = 0
                self.env[n.name] = Value(((name, 0),))
            elif n.target == state_name:
                self.env[n.name] = StateRef(())
            else:  # a parameter fixed by concrete_args
                self.env[n.name] = META
            return
        if op == "get_attr":
            self.env[n.name] = META
            return
        if op == "output":
            return
        if op == "call_module":
            self.env[n.name] = self._call_module(n, example)
            return
        if op in ("call_function", "call_method"):
            rule = lookup_function(n)
            if rule is None:
                what = f"method Tensor.{n.target}" if n.op == "call_method" else \
                    f"function {target_name(n)}"
                raise GraphError(f"fx node {n.name!r} calls the {what}, which has no polyir form",
                                 node=n.name, field="type",
                                 fix=f"{EXPORT_DOC} lists the torch functions and modules polyir "
                                     "exports; wrap this computation in an nn.Module and register "
                                     "a handler for it (@polyir.exporters.handler(MyModule))")
            first = n.args[0] if n.args else None
            values = {"input": example.get(first.name)} if isinstance(first, fx.Node) else {}
            self.env[n.name] = rule(self, n.name, n, values)
            return
        raise GraphError(f"fx node {n.name!r} has op {op!r}, which polyir cannot export",
                         node=n.name, field="type", fix="simplify the model")

    def _call_module(self, n, example):
        module = self.model.get_submodule(n.target)
        h: Handler | None = lookup(module)
        cls = type(module).__name__
        target = str(n.target)
        base = target.replace(".", "_")
        if target.split(".")[-1].isdigit():  # Sequential members: 'linear_0' rather than '0'
            base = f"{cls.lower()}_{base}"
        name = self.unique(base)
        if h is None:
            raise module_refusal(module, target, n.name, name, example.get(n.args[0].name)
                                 if n.args and isinstance(n.args[0], fx.Node) else None,
                                 example.get(n.name))
        if not n.args:
            raise GraphError(f"fx node {n.name!r} calls {n.target!r} without an input", node=n.name,
                             field="input", fix="pass the input positionally")
        value = self.value_of(n.args[0], n)
        extra = list(n.args[1:]) + list(n.kwargs.values())
        is_pair = n.name in self.pair_nodes
        if is_pair:
            if len(extra) > 1:
                raise GraphError(f"fx node {n.name!r} passes {len(extra) + 1} arguments to "
                                 f"{n.target!r}; a stateful module takes (x, state)", node=n.name,
                                 field="input", fix="call it as module(x, state)")
            self.token_inputs[n.name] = extra[0] if extra else None
        elif extra:
            raise GraphError(f"fx node {n.name!r} passes {len(extra) + 1} arguments to "
                             f"{n.target!r} ({cls}); polyir nodes take one input", node=n.name,
                             field="input", fix="call the module with one tensor")
        inp = example.get(n.args[0].name)
        out = example.get(n.name)
        if is_pair and isinstance(out, (tuple, list)):
            out = out[0]
        ctx = ExportContext(self, n, name, module, inp, out)
        result = h.fn(ctx, name, module, {"input": inp})
        if result is None:
            new = value
        else:
            new = self.add_node(name, result, value, n)
        if is_pair:
            return Pair(new, Token(n.name))
        if result is not None and stateful_result(result):
            raise GraphError(f"fx node {n.name!r}: {cls} is stateful but its result is used "
                             "directly", node=n.name, field="state",
                             fix="unpack it: out, state = module(x, state)")
        return new

    def _outputs(self, y_struct, example):
        found = list(leaves(y_struct, ()))
        outs = []
        for path, leaf in found:
            if not isinstance(leaf, fx.Node):
                raise GraphError(f"the model returns the constant {leaf!r} at {list(path)}",
                                 node="output", field="outputs", fix="return only tensors")
            v = self.env[leaf.name]
            if isinstance(v, Token):
                continue  # a module's state: the node keeps it
            outs.append((leaf, v))
        if not outs:
            raise GraphError("the model returns no tensor", node="output", field="outputs",
                             fix="return the output tensor(s)")
        for i, (leaf, v) in enumerate(outs):
            value = v.value if isinstance(v, Pair) else self.value_of(leaf, leaf)
            name = self.unique("output" if len(outs) == 1 else f"output_{i}")
            y = example[leaf.name]
            if isinstance(y, (tuple, list)):
                y = y[0]
            self.graph.add(name, ir.Output(tuple(int(s) for s in y.shape[1:])))
            self.node_delay[name] = 0
            for ref, d in value.terms:
                if d:
                    raise GraphError(f"output {name!r} is read from the previous step's state "
                                     f"({leaf.name!r})", node=name, field="state",
                                     fix="return values of this step")
                self.edge(ref, d, name, "input")

    def _finish(self) -> ir.Graph:
        g = self.graph
        required = self.resolve_recurrent()
        self._declare_bits()
        g.metadata = self._graph_metadata()
        g.check()
        self.check_recurrent(required)
        return g

    def _declare_bits(self):
        g = self.graph
        for name in g.inputs:
            node = g.nodes[name]
            bit_users, frontier, seen = [], [name], {name}
            while frontier:  # through elem-agnostic nodes (Flatten) to the first typed ones
                src = frontier.pop()
                for e in g.edges:
                    if e[0] != src or e[1] in seen:
                        continue
                    dst = g.nodes[e[1]]
                    elem = dst.in_ports().get(e[2] if len(e) > 2 else "input",
                                              ir.Port(None, None)).elem
                    seen.add(e[1])
                    if elem == "bit":
                        bit_users.append(e[1])
                    elif elem is None and not isinstance(dst, ir.Output):
                        frontier.append(e[1])
            want = self.input_elem_arg
            if want is None and not bit_users:
                continue
            if want is None:
                want = "bit"
            if want == "bit":
                x = self.inputs[g.inputs.index(name)]
                if not bool(((x == 0) | (x == 1)).all()):
                    raise GraphError(f"input {name!r} feeds logic node {bit_users[0]!r} directly, "
                                     "but the example input is not all 0/1", node=name,
                                     field="elem", fix="put a Binarize first, or feed 0/1 inputs")
            g.nodes[name] = ir.Input(node.shape, elem=want)

    def _graph_metadata(self) -> dict:
        md = {"producer": "polyir.export", "model": type(self.model).__name__}
        if len(self.inputs) == 1:
            md["input_shape"] = np.asarray(self.inputs[0].shape[1:], np.int64)
            md["input_dtype"] = str(self.inputs[0].dtype).replace("torch.", "")
        else:
            for name, x in zip(self.graph.inputs, self.inputs):
                md[f"input_shape.{name}"] = np.asarray(x.shape[1:], np.int64)
                md[f"input_dtype.{name}"] = str(x.dtype).replace("torch.", "")
        md.update(self.metadata)
        return md



def export(model: nn.Module, example_input, input_names=None, input_elem: str | None = None
           ) -> ir.Graph:
    """Trace `model` with torch.fx and convert it into a checked polyir Graph.

    example_input: a tensor (batch first), or a tuple of tensors for several inputs; it fixes
    every shape. input_names: names of the Input nodes (default 'input', or the forward's
    parameter names for several inputs). input_elem: 'real' or 'bit' for the inputs (default:
    'bit' where an input feeds a logic kind directly). See the module docstring for stateful
    models and for what maps to what.
    """
    if not isinstance(model, nn.Module):
        raise GraphError(f"export takes a torch.nn.Module, got {type(model).__name__}",
                         field="model", fix="pass the model")
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    for i, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor):
            raise GraphError(f"example input {i} is a {type(x).__name__}, not a tensor",
                             field="example_input", fix="pass torch tensors, batch dim first")
        if x.ndim < 1:
            raise GraphError(f"example input {i} is a scalar; it needs a batch dim",
                             field="example_input", fix="pass x.reshape(1, -1)")
    if input_elem not in (None, "real", "bit"):
        raise GraphError(f"input_elem={input_elem!r}", field="input_elem",
                         fix="use None, 'real' or 'bit'")
    load_builtin()
    if lookup(model) is not None:
        root, fx_graph = _leaf_root(model, len(inputs))
        state_name = None
    else:
        root = model
        state_name, concrete = signature(root, len(inputs))
        fx_graph = _trace(root, concrete)
    gm = fx.GraphModule(root, fx_graph)
    exporter = _Exporter(root, inputs, input_names, input_elem)
    try:
        g = exporter.run(gm, fx_graph, state_name, len(inputs))
    except GraphError as exc:
        loop = time_loop_refusal(root, exc)
        if loop is None:
            raise
        raise loop from exc
    g.metadata["model"] = type(model).__name__
    return g


def _trace(root: nn.Module, concrete) -> fx.Graph:
    tracer = PolyirTracer({id(m) for m in root.modules() if lookup(m) is not None})
    try:
        return tracer.trace(root, concrete_args=concrete)
    except GraphError:
        raise
    except Exception as exc:
        where = (f" inside {tracer.module_stack_names[-1]}" if tracer.module_stack_names else "")
        after = f", after fx node {tracer.last_node!r}" if tracer.last_node else ""
        raise trace_refusal(root, exc, where, after, tracer.last_node) from exc