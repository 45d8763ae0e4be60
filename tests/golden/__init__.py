"""Golden cases, the ONNX backend-test pattern: every case is a tiny Graph, seeded inputs, and the
expected outputs from a numpy reference written in the case module (never from polyir.nn or a
backend). tests/test_golden.py runs every case on every target; tests/golden/matrix.py folds the
results into the kind x target conformance matrix (`make conformance`, `polyir info --kinds`).

A case module (tests/golden/cases/*.py) holds one function per case, decorated `@golden`; the
function gets a fresh `numpy.random.Generator` (seed 0) and calls `case(...)` once or more (one
graph may carry several cases, e.g. a sweep over batch sizes: targets compile it once).

Stateful graphs (neurons, Delay) take (T, batch, *shape) sequences and give (T, batch, *shape)
outputs; stateless graphs take (batch, *shape) arrays. A relational Input (RuleSet facts) takes a
(values, args) tuple.

Besides the eval-mode reference a case may carry
- `relaxed`: the outputs in train mode (relaxed logic gates), from a numpy reference of the
  relaxation; kinds without a relaxed form compute the eval outputs in train mode too;
- `ode`: (outputs, rtol, atol) of the continuous-time system held constant over each step (the
  closed-form solution of the neuron equations), which the heyoka ODE target answers to;
- `refused`: {target: text} for targets that claim the case's kinds but must refuse one of its
  options (NIR has no per-side Conv padding) with a polyir error containing `text`.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable

import numpy as np

import polyir

__all__ = ["Case", "case", "golden", "collect", "case_kinds", "RELAXING_KINDS"]

#: kinds whose train-mode forward differs from eval mode (a softmax mixture of the 16 gates)
RELAXING_KINDS = {"LogicLayer", "LogicTree2d"}


@dataclasses.dataclass
class Case:
    name: str
    graph: polyir.Graph
    inputs: list
    expected: list[np.ndarray]
    rtol: float
    atol: float
    module: str
    relaxed: list[np.ndarray] | None = None
    ode: tuple | None = None  # (outputs, rtol, atol)
    refused: dict = dataclasses.field(default_factory=dict)  # target -> text of its error

    @property
    def exact(self) -> bool:
        return self.rtol == 0 and self.atol == 0

    @property
    def stateful(self) -> bool:
        return self.graph.flattened().stateful

    @property
    def kinds(self) -> set[str]:
        return case_kinds(self.graph)


_FUNCTIONS: list[Callable] = []
_CASES: dict[str, Case] = {}
_current: list[str] = []


def golden(fn: Callable) -> Callable:
    """Register a case function `fn(rng)`."""
    _FUNCTIONS.append(fn)
    return fn


def _arrays(xs):
    xs = xs if isinstance(xs, list) or (isinstance(xs, tuple) and not _is_relation(xs)) else [xs]
    return [x if _is_relation(x) else np.asarray(x) for x in xs]


def _is_relation(x) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and not isinstance(x[0], tuple) and (
        x[0] is None or isinstance(x[0], np.ndarray)) and isinstance(x[1], np.ndarray) \
        and x[1].dtype.kind in "iu"


def case(name: str, graph: polyir.Graph, inputs, expected, rtol: float = 0.0,
         atol: float = 0.0, relaxed=None, ode=None, refused=None) -> Case:
    """Register one golden case. `inputs` / `expected`: an array or a list of arrays, in the
    graph's Input / Output order. rtol = atol = 0 means exact equality. `relaxed`: train-mode
    outputs (same tolerance); `ode`: (outputs, rtol, atol) of the continuous-time system."""
    if name in _CASES:
        raise ValueError(f"golden case {name!r} is registered twice")
    graph.check()
    inputs, expected = _arrays(inputs), _arrays(expected)
    if len(inputs) != len(graph.inputs) or len(expected) != len(graph.outputs):
        raise ValueError(f"golden case {name!r}: {len(inputs)} inputs / {len(expected)} outputs "
                         f"for a graph of {len(graph.inputs)} / {len(graph.outputs)}")
    if ode is not None:
        ode = (_arrays(ode[0]), float(ode[1]), float(ode[2]))
    c = Case(name, graph, inputs, expected, float(rtol), float(atol),
             _current[-1] if _current else "?",
             None if relaxed is None else _arrays(relaxed), ode, dict(refused or {}))
    _CASES[name] = c
    return c


def collect() -> dict[str, Case]:
    """Import every case module, run every case function once (seeded), return name -> Case."""
    if not _CASES:
        from . import cases
        for info in sorted(pkgutil.iter_modules(cases.__path__), key=lambda i: i.name):
            importlib.import_module(f"{cases.__name__}.{info.name}")
        for fn in _FUNCTIONS:
            _current.append(fn.__module__.rsplit(".", 1)[-1])
            try:
                fn(np.random.default_rng(0))
            finally:
                _current.pop()
    return dict(_CASES)


def case_kinds(graph: polyir.Graph) -> set[str]:
    """Kind names a target must support to run the graph (Input/Output excluded)."""
    return {type(k).__name__ for k in graph.flattened().nodes.values()} - {"Input", "Output"}
