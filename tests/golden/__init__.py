"""Golden cases, the ONNX backend-test pattern: every case is a tiny Graph, seeded inputs, and the
expected outputs from a numpy reference written in the case module (never from polyir.nn or a
backend). tests/test_golden.py runs every case on every target that claims its kinds.

A case module (tests/golden/cases/*.py) holds one function per case, decorated `@golden`; the
function gets a fresh `numpy.random.Generator` (seed 0) and calls `case(...)` once.

Stateful graphs (neurons, Delay) take (T, batch, *shape) sequences and give (T, batch, *shape)
outputs; stateless graphs take (batch, *shape) arrays.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable

import numpy as np

import polyir

__all__ = ["Case", "case", "golden", "collect", "case_kinds"]


@dataclasses.dataclass
class Case:
    name: str
    graph: polyir.Graph
    inputs: list[np.ndarray]
    expected: list[np.ndarray]
    rtol: float
    atol: float
    module: str

    @property
    def exact(self) -> bool:
        return self.rtol == 0 and self.atol == 0

    @property
    def stateful(self) -> bool:
        return self.graph.flattened().stateful


_FUNCTIONS: list[Callable] = []
_CASES: dict[str, Case] = {}
_current: list[str] = []


def golden(fn: Callable) -> Callable:
    """Register a case function `fn(rng)`."""
    _FUNCTIONS.append(fn)
    return fn


def case(name: str, graph: polyir.Graph, inputs, expected, rtol: float = 0.0,
         atol: float = 0.0) -> Case:
    """Register one golden case. `inputs` / `expected`: an array or a list of arrays, in the
    graph's Input / Output order. rtol = atol = 0 means exact equality."""
    if name in _CASES:
        raise ValueError(f"golden case {name!r} is registered twice")
    graph.check()
    inputs = [np.asarray(x) for x in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    expected = [np.asarray(y) for y in
                (expected if isinstance(expected, (list, tuple)) else [expected])]
    if len(inputs) != len(graph.inputs) or len(expected) != len(graph.outputs):
        raise ValueError(f"golden case {name!r}: {len(inputs)} inputs / {len(expected)} outputs "
                         f"for a graph of {len(graph.inputs)} / {len(graph.outputs)}")
    c = Case(name, graph, inputs, expected, float(rtol), float(atol),
             _current[-1] if _current else "?")
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
