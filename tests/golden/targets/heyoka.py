"""Targets "heyoka" and "heyoka_ode": polyir.compile(graph, "heyoka") (float64, eval mode).

"heyoka" is a heyoka cfunc of the stateless kinds polyir.importers.heyoka builds expressions for;
"heyoka_ode" integrates neuron graphs as the continuous-time system with each step's input held
constant (heyoka's Taylor integrator, exact spike times). The ODE is not the forward-Euler
recurrence the eval references follow, so it answers to the case's closed-form `ode` reference
(cases without one are skipped), at that reference's own tolerance.
"""
from __future__ import annotations

import polyir

from . import outputs, register_target


def _heyoka_kinds():
    from polyir.importers.heyoka import heyoka_rule
    return set(heyoka_rule.supported())


def _ode_kinds():
    """Neurons and the static kinds with a smooth heyoka expression (the ODE importer's own
    lists)."""
    from polyir.importers.heyoka import static_kinds
    neurons = {name for name, cls in polyir.KINDS.items() if issubclass(cls, polyir.ir.Neuron)}
    return neurons | {k.__name__ for k in static_kinds()}


def _refuse_unclaimed(graph, kinds, why):
    for name, node in graph.flattened().nodes.items():
        kind = type(node).__name__
        if kind not in kinds | {"Input", "Output"}:
            raise polyir.GraphError(f"{kind} {why}", node=name, field="type",
                                    fix=f"this target takes {sorted(kinds)}")


def prepare_heyoka(graph):
    """The backend refuses kinds without a heyoka rule itself; a stateful graph would compile
    to an ODE program, which the heyoka_ode target checks."""
    if graph.stateful:
        _refuse_unclaimed(graph, _heyoka_kinds(), "is stateful: heyoka integrates it as an ODE "
                                                  "system (the heyoka_ode target)")
    prog = polyir.compile(graph, "heyoka")
    return lambda inputs: outputs(prog(*inputs))


def prepare_ode(graph):
    from polyir.importers.heyoka import ode_form_missing
    missing = ode_form_missing(graph)
    if missing is not None:
        name, why = missing
        raise polyir.GraphError(f"{name!r} {why}", node=name, field="type",
                                fix="run it on the torch or C target")
    if not graph.stateful:
        raise polyir.GraphError("the heyoka ODE target integrates neuron graphs",
                                field="type", fix="use the heyoka target for stateless graphs")
    prog = polyir.compile(graph, "heyoka")
    return lambda inputs: outputs(prog.run(*inputs))


def ode_reference(case):
    return case.ode


def _skip():
    try:
        import heyoka  # noqa: F401
    except ImportError:
        return "heyoka is not installed"
    return None


register_target("heyoka", prepare_heyoka, _heyoka_kinds, _skip,
                about="heyoka cfunc (stateless kinds)")
register_target("heyoka_ode", prepare_ode, _ode_kinds, _skip, reference=ode_reference,
                about="heyoka Taylor ODE, input held per step, vs closed form")
