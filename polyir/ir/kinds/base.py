"""The node-kind base class and the closed registry every kind is entered in."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from ..errors import GraphError
from ..fields import Record, _coerce_metadata, metadata_equal
from ..types import Port, port

#: file type string -> kind class. Closed: only `@kind` adds to it, and the loader reads nothing else.
KINDS: dict[str, type] = {}


def kind(cls=None, *, file_type: str | None = None):
    """Register a node kind. `file_type` is the `type` string in files (defaults to the class name)."""

    def register(c):
        name = file_type or c.__name__
        if name in KINDS:
            raise TypeError(f"kind {name!r} registered twice")
        c.file_type = name
        KINDS[name] = c
        return c

    return register if cls is None else register(cls)


@dataclasses.dataclass(frozen=True, eq=False)
class Kind(Record):
    """Base of every node kind: a frozen record of parameters plus free-form `metadata`.

    A kind declares its ports: `in_ports()` (name -> expected Port; shape None means any shape,
    elem None any element kind) and `out_port(inputs)` (the output Port given the resolved input
    ports, or None while they are unknown). `check(name, inputs)` raises GraphError for parameter
    invariants that need the input types (index ranges).
    """

    metadata: dict = dataclasses.field(default_factory=dict, kw_only=True)

    file_type: ClassVar[str] = ""
    stateful: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "metadata", _coerce_metadata(self.metadata, None))
        self.validate(None)

    def __eq__(self, other):
        eq = super().__eq__(other)
        if eq is NotImplemented or not eq:
            return eq
        return metadata_equal(self.metadata, other.metadata)

    __hash__ = object.__hash__

    @property
    def kind_name(self) -> str:
        return type(self).__name__

    # --- to override ---------------------------------------------------------------------------
    def validate(self, name: str | None) -> None:
        """Invariants between this kind's own fields (shapes agree, ranges): raise GraphError."""

    def in_ports(self) -> dict[str, Port]:
        return {"input": self.out_port({})}

    def out_port(self, inputs: dict[str, Port | None]) -> Port | None:
        raise NotImplementedError

    def check(self, name: str, inputs: dict[str, Port]) -> None:
        """Invariants that depend on the input types; called by Graph.check with known inputs."""

    def file_inferred(self, inputs: dict[str, Port]) -> dict:
        """Optional fields left None that NIR readers require: {field: value inferred from the
        input types}. The writer stores them and marks them inferred, so nir.read can open the
        file and polyir.load gives back None."""
        return {}

    def parameter_count(self) -> int:
        import numpy as np
        total = 0
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray) and v.dtype.kind == "f":
                total += v.size
            elif isinstance(v, dict) and f.name != "metadata":
                total += sum(a.size for a in v.values() if isinstance(a, np.ndarray))
        return total


#: where a file or NIR node lists optional fields that were written only for NIR's sake (values
#: polyir infers, e.g. a Conv's input_shape): an HDF5 attribute of the node's group, or a metadata
#: entry (comma-separated field names) on NIR nodes that to_nir made. Readers give those fields
#: back as None, so graphs round-trip unchanged.
INFERRED_KEY = "polyir_inferred"


def inferred_fields(cls, metadata: dict, node: str | None = None) -> tuple[list[str], dict]:
    """(field names marked inferred in `metadata`, metadata without the marker)."""
    if INFERRED_KEY not in metadata:
        return [], metadata
    from ..fields import Optional, specs
    meta = dict(metadata)
    value = meta.pop(INFERRED_KEY)
    names = [n for n in value.split(",") if n] if isinstance(value, str) else None
    optional = [n for n, spec in specs(cls) if isinstance(spec, Optional)]
    if names is None or any(n not in optional for n in names):
        raise GraphError(f"{INFERRED_KEY}={value!r} must name optional fields of "
                         f"{cls.__name__} ({optional})", node=node, field="metadata",
                         fix=f"remove the {INFERRED_KEY} entry")
    return names, meta


def same_shape(node: str | None, fields: dict, fix: str = "give every parameter the same shape"):
    """Raise GraphError unless all given arrays have one shape."""
    shapes = {k: v.shape for k, v in fields.items() if v is not None}
    if len(set(shapes.values())) > 1:
        first = next(iter(shapes))
        for k, s in shapes.items():
            if s != shapes[first]:
                raise GraphError(f"shape {s} differs from {first}'s {shapes[first]}", node=node,
                                 field=k, fix=fix)


def need_input(inputs: dict, name: str = "input") -> Port | None:
    p = inputs.get(name)
    return None if p is None or p.shape is None else p


__all__ = ["KINDS", "Kind", "kind", "port", "Port", "same_shape", "need_input", "GraphError",
           "INFERRED_KEY", "inferred_fields"]
