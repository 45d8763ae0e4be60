"""Target "heyoka": polyir.compile(graph, "heyoka") (a heyoka cfunc, float64, eval mode).

heyoka solves neuron graphs as exact ODEs (zero-order-hold input), not with the forward-Euler
steps the golden neuron cases expect, so this target claims only the stateless kinds that
polyir.importers.heyoka builds expressions for; any other kind is refused with a GraphError
naming it (tests/test_heyoka.py checks the ODEs against closed-form solutions instead).
"""
from __future__ import annotations

import polyir

from . import register_target


def _heyoka_kinds():
    from polyir.importers.heyoka import heyoka_rule
    return {k.__name__ for k in heyoka_rule.rules}


def run_heyoka(graph, inputs):
    kinds = _heyoka_kinds()
    for name, node in graph.flattened().nodes.items():
        if type(node).__name__ not in kinds:
            raise polyir.GraphError(f"{type(node).__name__} is not claimed by the heyoka golden "
                                    "target", node=name, field="type",
                                    fix=f"heyoka target kinds: {sorted(kinds)}")
    prog = polyir.compile(graph, "heyoka")
    outs = prog.run(*inputs) if graph.stateful else prog(*inputs)
    return list(outs) if isinstance(outs, tuple) else [outs]


def _skip():
    try:
        import heyoka  # noqa: F401
    except ImportError:
        return "heyoka is not installed"
    return None


register_target("heyoka", run_heyoka, _heyoka_kinds, _skip)
