"""Port types: a shape without batch (and time) dims plus an element kind."""
from __future__ import annotations

import dataclasses

ELEMS = ("real", "bit", "relation")


@dataclasses.dataclass(frozen=True)
class Port:
    """The type of values on an edge.

    shape: dims without batch/time; None while unknown (shape-polymorphic kinds infer it).
    elem: 'real', 'bit' (0/1 values; logic kinds), or 'relation' (a set of facts: values of
    shape `shape` for tuples of `arity` constants; RuleSet inputs). None accepts any element kind.
    """

    shape: tuple[int, ...] | None
    elem: str | None = "real"
    arity: int | None = None

    def __str__(self):
        shape = "?" if self.shape is None else "(" + ", ".join(map(str, self.shape)) + ")"
        extra = f"/{self.arity}" if self.elem == "relation" else ""
        return f"{self.elem or 'any'}{extra}{shape}"

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape or ():
            n *= d
        return n


def port(shape, elem: str | None = "real", arity: int | None = None) -> Port:
    return Port(None if shape is None else tuple(int(d) for d in shape), elem, arity)
