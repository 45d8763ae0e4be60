"""One walk for every direction (torch, heyoka, NIR, backend lowering), and the rule tables.

Each direction owns a `RuleTable` keyed by kind class (or, for a direction that reads another
format, by that format's class name), filled by a decorator in the module that implements that
direction (`@torch_rule(ir.LogicLayer)`). Every rule of every table has one signature,

    rule(ctx, name, node, values)

ctx: the direction's walker or builder state; name: the node's name in the graph; node: the kind
instance (or the foreign node being read); values: port name -> what the direction has for that
port (its type, heyoka expressions, a buffer, an example tensor; {} where nothing flows in).

A missing rule is a GraphError naming the node, its kind and the direction; the tables' keys are
the coverage that `polyir info --kinds` prints.
"""
from __future__ import annotations

from typing import Any, Callable

from .errors import GraphError
from .graph import Graph, edge_port

#: direction name -> RuleTable, for the coverage table.
TABLES: dict[str, "RuleTable"] = {}


class RuleTable:
    """kind -> rule(ctx, name, node, values), for one direction.

    by_name=True keys the table by class name instead of class: for a direction that reads
    another library's nodes (from NIR), whose classes polyir never imports by name.
    """

    def __init__(self, direction: str, label: str | None = None, by_name: bool = False):
        self.direction = direction
        self.label = label or direction  # how messages spell it ("NIR" for "nir")
        self.by_name = by_name
        self.rules: dict[Any, Callable] = {}
        TABLES[direction] = self

    def _key(self, cls) -> Any:
        return cls.__name__ if self.by_name and isinstance(cls, type) else cls

    def __call__(self, *kinds):
        def register(fn):
            for k in kinds:
                self.rules[self._key(k)] = fn
            return fn
        return register

    def __contains__(self, kind_cls) -> bool:
        return self._key(kind_cls) in self.rules

    def supported(self) -> list[str]:
        """The names of the kinds this direction has a rule for, sorted."""
        return sorted(k if isinstance(k, str) else k.__name__ for k in self.rules)

    def lookup(self, name: str, node) -> Callable:
        rule = self.rules.get(self._key(type(node)))
        if rule is None:
            raise GraphError(f"{type(node).__name__} {name!r} has no {self.label} form",
                             node=name, field="type",
                             fix=f"{self.label} supports {self.supported()}; remove or replace "
                                 "the node")
        return rule

    def apply(self, ctx, name: str, node, values: dict[str, Any]) -> Any:
        """Look up the node's rule and call it: rule(ctx, name, node, values)."""
        return self.lookup(name, node)(ctx, name, node, values)


class GraphWalker:
    """Visits the (flattened) graph in topological order.

    `inputs[name]` maps each input port to its non-recurrent source names; `recurrent[name]` the
    same for edges read with a one-step delay. Subclasses (or callers) combine values; `run`
    gives the common forward evaluation with `visit(name, node, port_values)` to override, where
    each port's value is the sum of its sources (NIR's rule) computed by `add`.
    """

    def __init__(self, graph: Graph):
        graph.check()
        self.graph = graph.flattened()
        self.order, self.recurrent_edges = self.graph.order()
        self.types = self.graph.infer_types()
        self.inputs: dict[str, dict[str, list[str]]] = {n: {} for n in self.graph.nodes}
        self.recurrent: dict[str, dict[str, list[str]]] = {n: {} for n in self.graph.nodes}
        for e in self.graph.edges:
            table = self.recurrent if tuple(e) in self.recurrent_edges else self.inputs
            table[e[1]].setdefault(edge_port(e), []).append(e[0])

    @property
    def input_names(self) -> list[str]:
        return self.graph.inputs

    @property
    def output_names(self) -> list[str]:
        return self.graph.outputs

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def gather(self, env: dict, name: str, previous: dict | None = None) -> dict[str, Any]:
        """Port values of `name`: the sum over its sources, recurrent ones read from `previous`
        (None where there is no previous step yet: those edges contribute nothing)."""
        values: dict[str, Any] = {}
        for port, srcs in self.inputs[name].items():
            for s in srcs:
                values[port] = env[s] if port not in values else self.add(values[port], env[s])
        for port, srcs in self.recurrent[name].items():
            for s in srcs:
                v = None if previous is None else previous.get(s)
                if v is None:
                    continue
                values[port] = v if port not in values else self.add(values[port], v)
        return values

    def visit(self, name: str, node, values: dict[str, Any]) -> Any:
        raise NotImplementedError

    def run(self, feeds: dict[str, Any], previous: dict | None = None) -> dict[str, Any]:
        env: dict[str, Any] = dict(feeds)
        for name in self.order:
            if name in feeds:
                continue
            node = self.graph.nodes[name]
            try:
                env[name] = self.visit(name, node, self.gather(env, name, previous))
            except Exception as exc:
                exc.add_note(f"while evaluating node {name!r} ({type(node).__name__})")
                raise
        return env
