"""Targets the golden cases run on. A target is a module in this folder that calls
`register_target(name, run, kinds, skip=None)`; every module here is imported by `load()`, so a
new backend plugs in by adding one file (e.g. `c.py`), nothing else.

- run(graph, inputs: list[np.ndarray]) -> list[np.ndarray]: stateless graphs get (batch, *shape)
  arrays, stateful ones (T, batch, *shape) sequences; return one array per Output, in order.
- kinds: the kind names the target claims (a set, or a callable giving one). For any other kind,
  run must raise a polyir error (GraphError...) whose message names the kind; that is tested.
- skip: None, or a callable giving a reason string when the target cannot run here (no GPU).
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable, Iterable

__all__ = ["Target", "TARGETS", "register_target", "load"]


@dataclasses.dataclass
class Target:
    name: str
    run: Callable
    kinds_spec: Iterable[str] | Callable[[], Iterable[str]]
    skip: Callable[[], str | None] | None = None

    @property
    def kinds(self) -> set[str]:
        spec = self.kinds_spec() if callable(self.kinds_spec) else self.kinds_spec
        return set(spec)

    def skip_reason(self) -> str | None:
        return self.skip() if self.skip is not None else None


TARGETS: dict[str, Target] = {}


def register_target(name: str, run: Callable, kinds, skip: Callable | None = None) -> Target:
    if name in TARGETS:
        raise ValueError(f"golden target {name!r} is registered twice")
    TARGETS[name] = t = Target(name, run, kinds, skip)
    return t


def load() -> dict[str, Target]:
    """Import every target module in this folder; name -> Target."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        importlib.import_module(f"{__name__}.{info.name}")
    return dict(TARGETS)
