"""Targets the golden cases run on. A target is a module in this folder that calls
`register_target(...)`; every module here is imported by `load()`, so a new backend plugs in by
adding one file, nothing else.

- prepare(graph) -> run(inputs: list) -> list[np.ndarray]: compile once, run many times (the
  ONNX backend's prepare / run). Stateless graphs get (batch, *shape) arrays, stateful ones
  (T, batch, *shape) sequences; run returns one array per Output, in order. Prepared programs are
  cached per graph, so the cases of one graph (a sweep) share one compile.
- kinds: the kind names the target claims -- the keys of its direction's rule table. For any
  other kind, prepare must raise a polyir error (GraphError...) whose message names the kind;
  that is tested, and the message is the matrix's "refused" reason.
- skip: None, or a callable giving a reason string when the target cannot run here (no GPU).
- reference(case): (expected outputs, rtol, atol) this target answers to, or None when the case
  has no reference for it (default: the eval-mode reference).
- prepare_many(graphs): optional; builds many graphs at once (one compiler run for all).
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable, Iterable

__all__ = ["Target", "TARGETS", "register_target", "load", "eval_reference"]


def eval_reference(case):
    return case.expected, case.rtol, case.atol


@dataclasses.dataclass
class Target:
    name: str
    prepare: Callable
    kinds_spec: Iterable[str] | Callable[[], Iterable[str]]
    skip: Callable[[], str | None] | None = None
    reference: Callable = eval_reference
    prepare_many: Callable | None = None
    about: str = ""
    _programs: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def kinds(self) -> set[str]:
        spec = self.kinds_spec() if callable(self.kinds_spec) else self.kinds_spec
        return set(spec)

    def skip_reason(self) -> str | None:
        return self.skip() if self.skip is not None else None

    def program(self, graph):
        """The prepared program of `graph` (cached by identity: cases keep their graphs alive)."""
        key = id(graph)
        if key not in self._programs:
            self._programs[key] = (graph, self.prepare(graph))
        return self._programs[key][1]

    def warm(self, graphs):
        """Prepare many graphs at once where the target can (one compiler run)."""
        todo = [g for g in graphs if id(g) not in self._programs]
        if self.prepare_many is not None and todo:
            for g, prog in zip(todo, self.prepare_many(todo)):
                self._programs[id(g)] = (g, prog)

    def run(self, graph, inputs):
        return self.program(graph)(inputs)


TARGETS: dict[str, Target] = {}


def register_target(name: str, prepare: Callable, kinds, skip: Callable | None = None, *,
                    reference: Callable = eval_reference, prepare_many: Callable | None = None,
                    about: str = "") -> Target:
    if name in TARGETS:
        raise ValueError(f"golden target {name!r} is registered twice")
    TARGETS[name] = t = Target(name, prepare, kinds, skip, reference, prepare_many, about)
    return t


def outputs(out) -> list:
    """A backend's result (one array or a tuple) as a list of numpy arrays."""
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o.detach().cpu().numpy() if hasattr(o, "detach") else o for o in outs]


def load() -> dict[str, Target]:
    """Import every target module in this folder; name -> Target (in the matrix's order)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        importlib.import_module(f"{__name__}.{info.name}")
    order = ["torch", "torch_train", "h5", "nir", "c", "cuda_emu", "cuda_gpu", "heyoka",
             "heyoka_ode"]
    return {k: TARGETS[k] for k in sorted(TARGETS, key=lambda k: (k not in order,
                                                                  order.index(k) if k in order
                                                                  else 0, k))}
