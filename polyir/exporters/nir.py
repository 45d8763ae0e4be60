"""NIR -> Graph: `from_nir(nir_graph)`.

One rule per NIR primitive in `nir_node_rule` (a RuleTable keyed by the NIR class name, so nothing
is imported by name and an unknown class is a clear error), each `rule(None, name, nir_node, {})`
(a NIR node is read on its own: no builder state, no input values) turning a NIR node into the
polyir kind of the same name and fields. Nested `NIRGraph`s become nested Graphs; node and graph metadata are kept
(nested dicts flattened to 'outer.inner' keys; values polyir cannot store are dropped with a
PolyirWarning). Missing `v_reset` (files before NIR 1.0) reads as zeros, a scalar `w_in` is
broadcast to the neuron shape, as NIR itself does. Arrays may be torch tensors, also ones that
require grad (they are detached).
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import ir
from ..ir.conventions import apply_convention
from ..ir.errors import GraphError, PolyirWarning
from ..ir.fields import Array, _coerce_metadata, specs, to_numpy
from ..ir.kinds.base import inferred_fields
from ..ir.walk import RuleTable

__all__ = ["from_nir", "nir_node_rule", "node_from_nir"]

#: NIR class name -> rule(None, name, nir_node, {}) -> polyir kind.
nir_node_rule = RuleTable("from_nir", label="polyir", by_name=True)


def _arr(node, field):
    value = getattr(node, field, None)  # tensors (rockpool's may require grad) are detached
    return None if value is None else np.asarray(to_numpy(value))


def _shape(value):
    """NIR stores shapes as arrays, lists, or {'input': array} dicts."""
    if isinstance(value, dict):
        value = next(iter(value.values())) if len(value) == 1 else None
    return None if value is None else tuple(int(d) for d in np.asarray(value).reshape(-1))


@nir_node_rule("Input")
def _input(ctx, name, node, values):
    return ir.Input(_shape(node.input_type))


@nir_node_rule("Output")
def _output(ctx, name, node, values):
    return ir.Output(_shape(node.output_type))


@nir_node_rule("Flatten")
def _flatten(ctx, name, node, values):
    return ir.Flatten(_shape(node.input_type), int(node.start_dim), int(node.end_dim))


def _padding(p):
    if isinstance(p, (str, bytes)):
        return p.decode() if isinstance(p, bytes) else p
    return tuple(int(v) for v in np.atleast_1d(p))


@nir_node_rule("Conv1d")
def _conv1d(ctx, name, node, values):
    shape = node.input_shape
    return ir.Conv1d(None if shape is None else int(np.asarray(shape).reshape(-1)[0]),
                     _arr(node, "weight"), int(np.asarray(node.stride).reshape(-1)[0]),
                     _padding(node.padding), int(np.asarray(node.dilation).reshape(-1)[0]),
                     int(node.groups), _arr(node, "bias"))


@nir_node_rule("Conv2d")
def _conv2d(ctx, name, node, values):
    shape = node.input_shape
    return ir.Conv2d(None if shape is None else _shape(shape), _arr(node, "weight"),
                     _padding(node.stride), _padding(node.padding), _padding(node.dilation),
                     int(node.groups), _arr(node, "bias"))


@nir_node_rule("SumPool2d", "AvgPool2d")
def _pool(ctx, name, node, values):
    cls = ir.SumPool2d if type(node).__name__ == "SumPool2d" else ir.AvgPool2d
    return cls(_padding(node.kernel_size), _padding(node.stride), _padding(node.padding))


@nir_node_rule("Affine", "Linear", "Scale", "Threshold", "Delay", *ir.NEURONS)
def _same_fields(ctx, name, node, values):
    """NIR's array-valued primitives: polyir's kind of the same name has the same field names
    (its array fields; a neuron's extension fields keep their defaults, which are NIR's). Fields
    a file omits are None (a neuron fills v_reset and w_in as NIR does); a one-element array
    beside shaped ones is read as one value for every neuron."""
    cls = ir.KINDS[type(node).__name__]
    values = {f: _arr(node, f) for f, spec in specs(cls) if isinstance(spec, Array)}
    shapes = {v.shape for v in values.values() if v is not None and v.size != 1}
    if len(shapes) == 1 and issubclass(cls, ir.Neuron):
        values = {f: v.reshape(()) if v is not None and v.size == 1 and v.shape not in shapes
                  else v for f, v in values.items()}
    return cls(**values)


def _metadata(value, where: str) -> dict:
    """NIR metadata (any dict) -> polyir metadata (flat str -> str, number, bool, numeric array)."""
    out: dict = {}
    if not isinstance(value, dict):
        return out

    def visit(d, prefix):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                visit(v, key + ".")
                continue
            if isinstance(v, (list, tuple)):
                v = np.asarray(v)
            try:
                out.update(_coerce_metadata({key: v}, where))
            except (GraphError, TypeError, ValueError, UnicodeDecodeError):
                warnings.warn(f"{where}: metadata {key!r} = {v!r:.60} cannot be stored in a "
                              "polyir graph; dropped", PolyirWarning, stacklevel=4)

    visit(value, "")
    return out


def node_from_nir(node, name: str = "node"):
    """One NIR node (or NIRGraph) -> the polyir kind (or Graph). GraphError for anything polyir
    has no kind for, naming the node."""
    cls_name = type(node).__name__
    if cls_name == "NIRGraph":
        return _graph(node, name)
    if cls_name not in nir_node_rule.rules:
        raise GraphError(f"NIR node {cls_name} {name!r} has no polyir form", node=name,
                         field="type", fix=f"polyir reads {nir_node_rule.supported()} and NIRGraph")
    try:
        kind = nir_node_rule.apply(None, name, node, {})
    except GraphError as exc:
        raise GraphError(exc.reason, node=name, field=exc.field, fix=exc.fix) from None
    except (AttributeError, TypeError, ValueError) as exc:
        raise GraphError(f"malformed NIR {cls_name}: {type(exc).__name__}: {exc}", node=name,
                         field="type", fix="build the NIR node with its documented fields") from None
    meta = _metadata(getattr(node, "metadata", None), name)
    inferred, meta = inferred_fields(type(kind), meta, name)   # filled in by to_nir
    changes = {f: None for f in inferred}
    return kind.replace(metadata=meta, **changes) if meta or changes else kind


def _graph(nir_graph, name: str | None) -> ir.Graph:
    prefix = "" if name is None else name + "."
    g = ir.Graph(metadata=_metadata(getattr(nir_graph, "metadata", None), name or "graph"))
    for n, node in nir_graph.nodes.items():
        g.add(str(n), node_from_nir(node, prefix + str(n)))
    for e in nir_graph.edges:
        if len(e) != 2:
            raise GraphError(f"edge {e!r} is not (src, dst)", node=name, field="edges",
                             fix="NIR edges are pairs of node names")
        g.connect(*(x.decode() if isinstance(x, bytes) else str(x) for x in e))
    return g


def from_nir(nir_graph, *, check: bool = True, convention: str | None = None) -> ir.Graph:
    """nir.NIRGraph -> polyir Graph (checked unless check=False). A single NIR node is wrapped
    into Input -> node -> Output when NIR knows its input type. `convention` ('snntorch',
    'norse', 'sinabs', 'rockpool') reads the file as that library's exporter meant it
    (polyir.ir.conventions); without it the file reads as NIR defines it."""
    if type(nir_graph).__name__ != "NIRGraph":
        node = node_from_nir(nir_graph)
        g = ir.Graph.sequential(node, input_shape=_shape(getattr(nir_graph, "input_type", None)))
    else:
        g = _graph(nir_graph, None)
    g = apply_convention(g, convention)
    if check:
        g.check()
    return g
