"""torch.nn.Module -> polyir Graph by torch.fx tracing: the entry point `export` and the tracer.

    g = polyir.export(model, example_input)

How it works:
1. `PolyirTracer` (a torch.fx Tracer) treats every module a handler knows as a leaf: one
   `call_module` node. Everything else is traced through.
2. The traced graph runs once on the example input (eval mode, no grad) to record every value's
   shape (polyir.exporters.example_run); a module's handler sees its example input and output
   (polyir.exporters.context.ExportContext).
3. Each fx node becomes polyir (polyir.exporters.convert): `call_module` -> the module's handler (BatchNorm folds into the
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

import torch
import torch.fx as fx
from torch import nn

from .. import ir
from ..ir.errors import GraphError
from .context import ExportContext
from .convert import Converter
from .handlers import load_builtin, lookup
from .refusals import is_refused_leaf, time_loop_refusal, trace_refusal
from .state import signature

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
    exporter = Converter(root, inputs, input_names, input_elem)
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
