"""fx graph -> polyir Graph: each fx node of a traced model becomes polyir nodes and edges.

`call_module` -> the module's handler (polyir.exporters.handlers; BatchNorm folds into the layer
before it through `ExportContext.producer`); `call_function` / `call_method` -> the rule of
polyir.exporters.functions; `a + b` of two traced values -> fan-in edges (several edges into one
port are summed, NIR's rule); state read back one step late -> recurrent edges (the protocol of
polyir.exporters.state). Anything else is a GraphError naming the fx node and how to fix it.
The graph gets its input shapes and dtypes, `dt` and discretisation in its metadata, and Inputs
that feed logic kinds directly are declared elem='bit'.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch.fx as fx
from torch import nn

from .. import ir
from ..ir.errors import GraphError
from .context import ExportContext
from .example_run import example_values
from .functions import lookup_function, target_name
from .handlers import Handler, lookup, refusal_of
from .refusals import EXPORT_DOC, module_refusal
from .state import (META, Pair, Pending, StateProtocol, StateRef, Token, Value, leaves,
                    stateful_result)

__all__ = ["Converter"]


class Converter(StateProtocol):
    """Turns a traced fx graph into a polyir Graph: one `run` per export."""

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
        self.token_inputs: dict[str, Any] = {}  # call node -> state arg values
        self.fragment_recurrent: set[tuple] = set()  # cycles inside a handler's fragment
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
        _, recurrent = frag.order()
        self.fragment_recurrent |= {(names[e[0]], names[e[1]], *e[2:]) for e in recurrent}
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
        self._check_modules(nodes)
        example = example_values(gm, self.inputs, self.state_leaves, state_name,
                                 n_inputs, nodes)
        self.example = example
        placeholders = [n for n in nodes if n.op == "placeholder"]
        names = self._input_names(placeholders[:n_inputs])
        for n in nodes:
            self._convert(n, example, placeholders, names, state_name, n_inputs)
        self._outputs(y_struct, example)
        self._check_state_tokens(state_name)
        return self._finish()

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

    def _check_modules(self, nodes) -> None:
        """The refusals a module's attributes decide, before the model runs (its own forward may
        fail with the option at fault)."""
        for n in nodes:
            if n.op != "call_module":
                continue
            refusal = refusal_of(self.model.get_submodule(n.target))
            if refusal is not None:
                message, field, fix = refusal
                raise GraphError(message, node=str(n.target), field=field, fix=fix)

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
        out = example.get(n.name)
        size = len(out) if is_pair and isinstance(out, (tuple, list)) else 2
        if is_pair:
            if len(extra) > size - 1:
                form = ", ".join(["out"] + [f"state_{i}" for i in range(1, size)])
                raise GraphError(f"fx node {n.name!r} passes {len(extra) + 1} arguments to "
                                 f"{n.target!r}, which returns {size} values; a stateful module "
                                 "takes (x, *its own state)", node=n.name, field="input",
                                 fix=f"call it as {form} = module(x, "
                                     f"{form.partition(', ')[2]}), or as module(x)")
            self.token_inputs[n.name] = extra
        elif extra:
            raise GraphError(f"fx node {n.name!r} passes {len(extra) + 1} arguments to "
                             f"{n.target!r} ({cls}); polyir nodes take one input", node=n.name,
                             field="input", fix="call the module with one tensor")
        inp = example.get(n.args[0].name)
        if is_pair and isinstance(out, (tuple, list)):
            out = out[0]
        ctx = ExportContext(self, n, name, module, inp, out)
        result = h.fn(ctx, name, module, {"input": inp})
        if result is None:
            new = value
        else:
            new = self.add_node(name, result, value, n)
        if is_pair:
            return Pair(new, Token(n.name), size)
        if result is not None and h.returns_state is None and stateful_result(result):
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
        required = self.resolve_recurrent() | self.fragment_recurrent
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
