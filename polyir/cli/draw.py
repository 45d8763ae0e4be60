"""`polyir draw FILE -o graph.svg|png|pdf|dot`: the graph as a graphviz picture.

One box per node (name, kind, output type); edges labelled with the port they feed where it is
not `input`; recurrent edges (read with a one-step delay) dashed and marked `t-1`; nested graphs
as clusters; logic layers summarised by width and gate histogram; rule sets as their rules in
text form. `graph_dot(graph)` builds the graphviz source (no binary needed); rendering SVG, PNG or
PDF runs graphviz's `dot`.
"""
from __future__ import annotations

import collections
import os

from ..ir import Graph, PolyirError
from ..ir.errors import GraphError
from ..ir.h5 import load
from .registry import arguments, command, json_arg

#: how many lines of a RuleSet's text a box shows, and how long a label line may be
MAX_RULE_LINES = 24
MAX_LINE = 100
#: output extension -> graphviz format (None: the DOT source itself)
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": None}
#: fill colour per family of kinds (the module a kind is declared in)
FAMILY_COLOURS = {"nir": "#ffffff", "ffnn": "#fff4d6", "logic": "#dcebfa", "rules": "#f6dff0"}
STATEFUL_COLOUR = "#e3f4dc"


class DrawError(PolyirError, RuntimeError):
    """Rendering the picture failed (no graphviz `dot` program, an unknown output format)."""


def _text(value) -> str:
    """A label line for graphviz: cut to MAX_LINE characters, backslashes doubled so that names
    print as they are."""
    text = str(value)
    if len(text) > MAX_LINE:
        text = text[:MAX_LINE - 4] + " ..."
    return text.replace("\\", "\\\\")


def _label(lines) -> str:
    return "\\l".join(_text(line) for line in lines) + "\\l"


def gate_histogram(gates) -> list[str]:
    """'XOR 5' style counts of the gate ids, most frequent first, four per line."""
    from ..ir.kinds.logic import GATE_NAMES
    counts = collections.Counter(int(g) for g in gates.reshape(-1))
    items = [f"{GATE_NAMES[g]} {n}" for g, n in sorted(counts.items(), key=lambda kv: (-kv[1],
                                                                                       kv[0]))]
    return [", ".join(items[i:i + 4]) for i in range(0, len(items), 4)]


def summary(node) -> list[str]:
    """Extra label lines for kinds whose parameters are worth seeing at a glance."""
    from ..ir import LogicLayer, LogicTree2d, RuleSet
    if isinstance(node, LogicLayer):
        return [f"width {len(node.gate):,} gates"] + gate_histogram(node.gate)
    if isinstance(node, LogicTree2d):
        k, leaves, _ = node.leaves.shape
        return [f"{k} kernels, depth {node.depth} ({leaves} leaves)"] + gate_histogram(node.gates)
    if isinstance(node, RuleSet):
        from ..ir.rules_text import describe
        lines = (describe(node) or "").splitlines()
        if len(lines) > MAX_RULE_LINES:
            lines = lines[:MAX_RULE_LINES] + [f"... ({len(lines) - MAX_RULE_LINES} more lines)"]
        return lines
    return []


def _style(node) -> dict:
    from ..ir import Input, Output
    if isinstance(node, Input):
        return {"shape": "invhouse", "style": "filled", "fillcolor": "#eeeeee"}
    if isinstance(node, Output):
        return {"shape": "house", "style": "filled", "fillcolor": "#eeeeee"}
    if type(node).stateful:
        return {"shape": "box", "style": "rounded,filled", "peripheries": "2",
                "fillcolor": STATEFUL_COLOUR}
    family = type(node).__module__.rsplit(".", 1)[-1]
    return {"shape": "box", "style": "rounded,filled",
            "fillcolor": FAMILY_COLOURS.get(family, "#ffffff")}


class _Drawer:
    """Adds one graph level's nodes and edges to a graphviz (sub)graph; node ids are n0, n1, ...
    so that no node name can change the DOT syntax."""

    def __init__(self):
        self.ids: dict[str, str] = {}

    def node_id(self, path: str) -> str:
        return self.ids.setdefault(path, f"n{len(self.ids)}")

    def draw(self, dot, graph: Graph, prefix: str = "") -> None:
        types = graph.infer_types(strict=False)
        try:
            recurrent = {tuple(e) for e in graph.order()[1]}
        except GraphError:  # drawing a graph that does not check still shows what it has
            recurrent = set()
        for name, node in graph.nodes.items():
            path = prefix + name
            if isinstance(node, Graph):
                with dot.subgraph(name=f"cluster_{self.node_id(path + '/')}") as sub:
                    sub.attr(label=_text(f"{name} (nested graph)"), style="rounded",
                             color="#888888")
                    self.draw(sub, node, path + ".")
                continue
            lines = [name, f"{node.kind_name} -> {types.get(name, '?')}"] + summary(node)
            dot.node(self.node_id(path), _label(lines), **_style(node))
        for e in graph.edges:
            src, dst, port = e[0], e[1], (e[2] if len(e) > 2 else "input")
            attrs = {}
            if port != "input":
                attrs["label"] = _text(port)
            if tuple(e) in recurrent:
                attrs.update(style="dashed", constraint="false",
                             label=(attrs.get("label", "") + " t-1").strip())
            for s in self.sources(graph, src, prefix):
                for d in self.targets(graph, dst, port, prefix):
                    dot.edge(s, d, **attrs)

    def sources(self, graph: Graph, name: str, prefix: str) -> list[str]:
        node = graph.nodes[name]
        if not isinstance(node, Graph):
            return [self.node_id(prefix + name)]
        return [self.node_id(f"{prefix}{name}.{o}") for o in node.outputs]

    def targets(self, graph: Graph, name: str, port: str, prefix: str) -> list[str]:
        node = graph.nodes[name]
        if not isinstance(node, Graph):
            return [self.node_id(prefix + name)]
        inputs = node.inputs
        chosen = inputs if len(inputs) == 1 else [i for i in inputs if i == port]
        return [self.node_id(f"{prefix}{name}.{i}") for i in chosen]


def graph_dot(graph: Graph, title: str | None = None):
    """The graph as a `graphviz.Digraph` (its `.source` is the DOT text)."""
    import graphviz
    dot = graphviz.Digraph("polyir", graph_attr={"rankdir": "TB", "fontname": "Helvetica"},
                           node_attr={"fontname": "Helvetica", "fontsize": "10"},
                           edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    if title:
        dot.attr(label=_text(title), labelloc="t")
    _Drawer().draw(dot, graph)
    return dot


def render(graph: Graph, output: str, title: str | None = None) -> str:
    """Write the picture of `graph` to `output` (format from its extension); returns the format."""
    ext = os.path.splitext(str(output))[1].lower()
    if ext not in FORMATS:
        raise DrawError(f"cannot draw to {output!r}: use one of {sorted(FORMATS)}")
    dot = graph_dot(graph, title)
    fmt = FORMATS[ext]
    if fmt is None:
        data = dot.source.encode()
    else:
        import graphviz
        try:
            data = dot.pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            raise DrawError("graphviz's 'dot' program is not installed; install it (Debian / "
                            "Ubuntu: apt-get install graphviz; macOS: brew install graphviz), or "
                            "write the DOT source with -o graph.dot") from None
        except graphviz.CalledProcessError as exc:
            raise DrawError(f"graphviz failed: {exc.stderr.decode(errors='replace')}") from None
    tmp = f"{output}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, output)
    return fmt or "dot"


@command("draw", "draw a graph with graphviz (.svg, .png, .pdf, or the .dot source)")
@arguments(lambda p: (p.add_argument("file", help="a polyir .h5 or NIR .nir file"),
                      p.add_argument("-o", "--output", required=True,
                                     help="the picture to write: .svg, .png, .pdf or .dot"),
                      json_arg(p)))
def cmd_draw(args) -> int:
    from .tables import emit
    g = load(args.file)
    fmt = render(g, args.output, title=os.path.basename(args.file))
    data = {"file": args.file, "output": args.output, "format": fmt,
            "nodes": len(g.flattened().nodes), "edges": len(g.flattened().edges)}
    emit(args, data, lambda: print(f"wrote {args.output} ({fmt}, {data['nodes']} nodes)"))
    return 0
