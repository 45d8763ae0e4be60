"""Graph -> NIR: `to_nir(graph)`, and the maps nirtorch users need: `nirtorch_maps()`.

`to_nir` uses one rule per kind in `nir_rule` (a RuleTable, like every direction): each
`rule(graph, name, node, values)` (values: the input port's type) returns the NIR node of the same
name and fields. Kinds NIR has no primitive for (logic kinds, GroupSum,
Binarize, Activation, RuleSet) fail with a GraphError naming the node ("LogicLayer 'l1' has no
NIR form"). Fields polyir leaves to shape inference and NIR wants written out are filled from the
graph's inferred types: Conv1d/Conv2d `input_shape`, Flatten `input_type`. Nested graphs stay
nested NIRGraphs; node and graph metadata are copied. The NIRGraph is built without NIR's own type
check: nir 1.0.8 mistypes grouped and non-square convolutions, and polyir has checked the graph.

`nirtorch_maps(dt=None, discretization="euler")` returns
`{"nir_to_torch": {nir class: fn(node) -> torch module}, "torch_to_nir": {polyir.nn class:
fn(module) -> nir node}}` for `nirtorch.nir_to_torch(graph, maps["nir_to_torch"])` and
`nirtorch.torch_to_nir(module, maps["torch_to_nir"])`. The NIR -> torch side builds polyir.nn
modules for NIR's neurons (nirtorch has no defaults for them), a Linear that keeps the Affine bias
(nirtorch 2.6 drops it), a batch-aware Flatten (NIR counts dims without the batch dim) and a
SumPool2d that honours padding. Neurons and Delay need `dt` (seconds): the argument, else the
node's `metadata["dt"]`, else a GraphError at mapping time.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import ir
from ..ir.errors import GraphError
from ..ir.graph import edge_port
from ..ir.kinds.base import INFERRED_KEY
from ..ir.walk import RuleTable

__all__ = ["to_nir", "nir_rule", "nirtorch_maps"]

nir_rule = RuleTable("nir", label="NIR")


def _np(a):
    """A writable copy: NIR's constructors may modify what they are given."""
    return None if a is None else np.array(a)


def _nir():
    import nir
    return nir


@nir_rule(ir.Input)
def _input(ctx, name, node, values):
    if node.elem != "real":
        raise GraphError(f"Input {name!r} declares elem={node.elem!r}, which NIR cannot express",
                         node=name, field="elem", fix="NIR inputs are real-valued")
    return _nir().Input(input_type=np.array(node.shape, dtype=np.int64))


@nir_rule(ir.Output)
def _output(ctx, name, node, values):
    return _nir().Output(output_type=np.array(node.shape, dtype=np.int64))


@nir_rule(ir.Affine)
def _affine(ctx, name, node, values):
    return _nir().Affine(weight=_np(node.weight), bias=_np(node.bias))


@nir_rule(ir.Linear)
def _linear(ctx, name, node, values):
    return _nir().Linear(weight=_np(node.weight))


@nir_rule(ir.Scale)
def _scale(ctx, name, node, values):
    return _nir().Scale(scale=_np(node.scale))


@nir_rule(ir.Threshold)
def _threshold(ctx, name, node, values):
    return _nir().Threshold(threshold=_np(node.threshold))


@nir_rule(ir.Flatten)
def _flatten(ctx, name, node, values):
    shape = node.input_type if node.input_type is not None else values["input"].shape
    return _nir().Flatten(input_type={"input": np.array(shape, dtype=np.int64)},
                          start_dim=node.start_dim, end_dim=node.end_dim)


def _conv_bias(node):
    """NIR's Conv always has a bias: zeros for a bias-free conv (marked inferred)."""
    return _np(node.bias if node.bias is not None else node.file_inferred({})["bias"])


def _symmetric_padding(name, node):
    """NIR's Conv pads both sides of a dim alike: per-side padding has no NIR form."""
    if node.padding_end is not None:
        raise GraphError(f"{node.kind_name} {name!r} pads its sides differently ({node.pads}); "
                         "NIR's Conv pads both sides of a dim alike", node=name,
                         field="padding_end", fix="use symmetric padding, or keep the graph in "
                                                  "polyir's own file format")
    return node.padding


@nir_rule(ir.Conv1d)
def _conv1d(ctx, name, node, values):
    shape = node.input_shape if node.input_shape is not None else int(values["input"].shape[1])
    return _nir().Conv1d(input_shape=shape, weight=_np(node.weight), stride=node.stride,
                         padding=_symmetric_padding(name, node), dilation=node.dilation,
                         groups=node.groups, bias=_conv_bias(node))


@nir_rule(ir.Conv2d)
def _conv2d(ctx, name, node, values):
    shape = (node.input_shape if node.input_shape is not None
             else tuple(values["input"].shape[1:]))
    return _nir().Conv2d(input_shape=tuple(shape), weight=_np(node.weight), stride=node.stride,
                         padding=_symmetric_padding(name, node), dilation=node.dilation,
                         groups=node.groups, bias=_conv_bias(node))


@nir_rule(ir.SumPool2d, ir.AvgPool2d)
def _pool(ctx, name, node, values):
    cls = _nir().SumPool2d if isinstance(node, ir.SumPool2d) else _nir().AvgPool2d
    return cls(kernel_size=np.array(node.kernel_size), stride=np.array(node.stride),
               padding=np.array(node.padding))


@nir_rule(ir.Delay)
def _delay(ctx, name, node, values):
    return _nir().Delay(delay=_np(node.delay))


def _nir_neuron(node, name):
    """The NIR node of a neuron kind at NIR's defaults; GraphError naming an extension field
    that NIR cannot express."""
    extra = node.non_default_options()
    if extra:
        fields = ", ".join(f"{f}={v!r}" for f, v in extra.items())
        raise GraphError(f"{node.kind_name} {name!r} has {fields}, which NIR's "
                         f"{node.kind_name} cannot express", node=name, field=next(iter(extra)),
                         fix="keep this neuron in a polyir file (.h5), or use NIR's default "
                             f"{' and '.join(extra)}")
    cls = getattr(_nir(), node.kind_name)
    return cls(**{f: _np(a) for f, a in node.parameters().items()})


@nir_rule(*ir.NEURONS.values())
def _neuron(ctx, name, node, values):
    return _nir_neuron(node, name)


def _metadata(meta: dict) -> dict:
    return {k: (np.array(v) if isinstance(v, np.ndarray) else v) for k, v in meta.items()}


def _unsupported(graph: ir.Graph, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, node in graph.nodes.items():
        if isinstance(node, ir.Graph):
            out += _unsupported(node, prefix + name + ".")
        elif type(node) not in nir_rule:
            out.append((prefix + name, node))
    return out


def _graph(graph: ir.Graph, prefix: str):
    nir = _nir()
    types = graph.infer_types(prefix=prefix)
    fed: dict[str, Any] = {}
    for e in graph.edges:
        if edge_port(e) != "input":
            raise GraphError(f"edge {e[0]!r} -> {e[1]!r} feeds port {edge_port(e)!r}; NIR edges "
                             "have no ports", node=prefix + e[1], field="edges",
                             fix="give nested graphs one Input for NIR")
        fed.setdefault(e[1], types[e[0]])
    nodes = {}
    for name, node in graph.nodes.items():
        if isinstance(node, ir.Graph):
            nodes[name] = _graph(node, prefix + name + ".")
            continue
        values = {"input": fed[name]} if name in fed else {}
        out = nir_rule.apply(graph, prefix + name, node, values)
        out.metadata = _metadata(node.metadata)
        inferred = node.file_inferred(values)
        if inferred:  # written for NIR; from_nir and polyir.load give them back as None
            out.metadata[INFERRED_KEY] = ",".join(inferred)
        nodes[name] = out
    return nir.NIRGraph(nodes=nodes, edges=[(e[0], e[1]) for e in graph.edges],
                        metadata=_metadata(graph.metadata), type_check=False)


def to_nir(graph: ir.Graph):
    """Graph of NIR primitives -> nir.NIRGraph (GraphError naming any node without NIR form)."""
    if not isinstance(graph, ir.Graph):
        raise GraphError(f"to_nir() takes a polyir.Graph, got {type(graph).__name__}",
                         fix="export or load a Graph first")
    graph.check()
    missing = _unsupported(graph)
    if missing:
        name, node = missing[0]
        others = ", ".join(f"{n.kind_name} {m!r}" for m, n in missing[1:6])
        more = f" (also {others}{', ...' if len(missing) > 6 else ''})" if others else ""
        supported = nir_rule.supported()
        raise GraphError(f"{node.kind_name} {name!r} has no NIR form{more}", node=name,
                         field="type", fix=f"NIR has {supported} and nested graphs; keep such "
                                           "nodes in polyir files, or replace them")
    return _graph(graph, "")


# ------------------------------------------------------------------------------------------------
# nirtorch


def _dt(node, dt, kind):
    if dt is None:
        dt = (getattr(node, "metadata", None) or {}).get("dt")
    if dt is None:
        raise GraphError(f"NIR {kind} needs a time step dt to become a torch module", node=kind,
                         field="dt", fix="call polyir.nirtorch_maps(dt=1e-4) (seconds)")
    return float(dt)


def _t(a):
    import torch
    return torch.from_numpy(np.array(a))


def _pair(v):
    v = np.atleast_1d(np.asarray(v)).astype(np.int64)
    return (int(v[0]), int(v[-1]))


def nirtorch_maps(dt: float | None = None, discretization: str = "euler") -> dict:
    """{'nir_to_torch': node map for nirtorch.nir_to_torch, 'torch_to_nir': module map for
    nirtorch.torch_to_nir}; see the module docstring."""
    import nir
    import torch
    from torch import nn

    from .. import nn as pnn

    def linear(weight, bias):
        w = _t(weight)
        m = nn.Linear(w.shape[-1], w.shape[-2], bias=bias is not None, dtype=w.dtype)
        with torch.no_grad():
            m.weight.copy_(w)
            if bias is not None:
                m.bias.copy_(_t(bias).to(w.dtype))
        return m

    def conv(node):
        w = _t(node.weight)
        cls = nn.Conv1d if w.ndim == 3 else nn.Conv2d
        pad = node.padding
        if isinstance(pad, (str, bytes)):
            pad = pad.decode() if isinstance(pad, bytes) else pad
            if pad == "valid":
                pad = 0
        else:
            pad = tuple(int(p) for p in np.atleast_1d(pad))
        as_tuple = (lambda v: tuple(int(x) for x in np.atleast_1d(v)))
        m = cls(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]),
                stride=as_tuple(node.stride), padding=pad, dilation=as_tuple(node.dilation),
                groups=int(node.groups), bias=True, dtype=w.dtype)
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(_t(node.bias).to(w.dtype))
        return m

    def flatten(node):
        def shift(d):  # NIR counts dims without the batch dim, torch with it
            d = int(d)
            return d + 1 if d >= 0 else d
        return nn.Flatten(shift(node.start_dim), shift(node.end_dim))

    def neuron(layer):
        def build(node):
            params = {f: _t(getattr(node, f)) for f in layer.kind.parameter_fields()
                      if getattr(node, f, None) is not None}
            return layer(**params, dt=_dt(node, dt, type(node).__name__),
                         discretization=discretization)
        return build

    nir_to_torch = {
        nir.Input: lambda node: nn.Identity(),
        nir.Output: lambda node: nn.Identity(),
        nir.Affine: lambda node: linear(node.weight, node.bias),
        nir.Linear: lambda node: linear(node.weight, None),
        nir.Conv1d: conv,
        nir.Conv2d: conv,
        nir.Flatten: flatten,
        nir.SumPool2d: lambda node: pnn.SumPool2d(_pair(node.kernel_size), _pair(node.stride),
                                                  _pair(node.padding)),
        nir.AvgPool2d: lambda node: nn.AvgPool2d(_pair(node.kernel_size), _pair(node.stride),
                                                 _pair(node.padding), count_include_pad=True),
        nir.Scale: lambda node: pnn.Scale(_t(node.scale)),
        nir.Threshold: lambda node: pnn.Threshold(_t(node.threshold)),
        nir.Delay: lambda node: pnn.Delay(np.asarray(node.delay, np.float64),
                                          _dt(node, dt, "Delay")),
        **{getattr(nir, kind.__name__): neuron(layer) for kind, layer in pnn.LAYERS.items()},
    }

    def arr(t):
        return t.detach().cpu().numpy().copy()

    torch_to_nir = {
        pnn.Scale: lambda m: nir.Scale(arr(m.scale)),
        pnn.Threshold: lambda m: nir.Threshold(arr(m.threshold)),
        pnn.SumPool2d: lambda m: nir.SumPool2d(np.array(m.kernel_size), np.array(m.stride),
                                               np.array(m.padding)),
        pnn.Delay: lambda m: nir.Delay(m.steps.detach().cpu().numpy().astype(np.float64) * m.dt),
        **{layer: (lambda m: _nir_neuron(m.to_ir(), type(m).__name__))
           for layer in pnn.LAYERS.values()},
    }
    return {"nir_to_torch": nir_to_torch, "torch_to_nir": torch_to_nir}
