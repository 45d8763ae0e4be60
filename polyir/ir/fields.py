"""Field specs: how each field of a node kind is typed, coerced, compared and stored.

A kind declares its fields with `param(spec)`; coercion (`Record.__post_init__`), equality and the
.h5 reader/writer (`ir/h5/`) are all driven by these specs, so a new kind needs no I/O code.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import MISSING
from typing import Any

import numpy as np

from .errors import GraphError

REAL_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def to_numpy(value):
    """Accept numpy arrays, python numbers/lists and torch tensors (without importing torch;
    tensors that require grad are detached)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return value


class Spec:
    """How one field is typed. Subclasses implement `coerce` and `equal`."""

    def coerce(self, value: Any, node: str | None, field: str) -> Any:
        raise NotImplementedError

    def equal(self, a: Any, b: Any) -> bool:
        return a == b

    def describe(self) -> str:
        return type(self).__name__


@dataclasses.dataclass(frozen=True)
class Array(Spec):
    """An ndarray. family 'real' keeps float16/32/64 as given (others become float32), 'int' is
    int64, 'gate' is uint8, 'bool' is bool. `ndim` fixes the rank when given."""

    family: str
    ndim: int | None = None

    def coerce(self, value, node, field):
        value = to_numpy(value)
        try:
            arr = np.asarray(value)
        except Exception as exc:  # ragged lists etc.
            raise GraphError(f"cannot be read as an array ({exc})", node=node, field=field,
                             fix="pass a numpy array or a rectangular list") from None
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise GraphError(f"must be numeric, got dtype {arr.dtype}", node=node, field=field,
                             fix="pass a numeric numpy array")
        if self.family == "real":
            if arr.dtype not in REAL_DTYPES:
                arr = arr.astype(np.float32)
        elif self.family in ("int", "gate"):
            target = np.int64 if self.family == "int" else np.uint8
            if arr.dtype.kind == "f":
                if arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
                    raise GraphError("must hold whole numbers", node=node, field=field,
                                     fix="pass an integer array")
            elif arr.dtype.kind not in "iub":
                raise GraphError(f"must be an integer array, got {arr.dtype}", node=node,
                                 field=field, fix="pass an integer array")
            if self.family == "gate" and arr.size and (arr.min() < 0 or arr.max() > 15):
                raise GraphError(f"gate ids must lie in 0..15, got {arr.min()}..{arr.max()}",
                                 node=node, field=field, fix="use difflogic's gate order 0..15")
            arr = arr.astype(target)
        elif self.family == "bool":
            arr = arr.astype(bool)
        else:  # pragma: no cover - programming error in a kind declaration
            raise TypeError(self.family)
        if self.ndim is not None and arr.ndim != self.ndim:
            raise GraphError(f"must have {self.ndim} dimension(s), got shape {arr.shape}",
                             node=node, field=field, fix=f"reshape it to {self.ndim}-D")
        arr = np.require(arr, requirements="C")  # ascontiguousarray would make 0-d arrays 1-d
        if arr.base is not None or arr is value:
            arr = arr.copy()
        arr.flags.writeable = False  # kinds are frozen: so are their parameters
        return arr

    def equal(self, a, b):
        return (a.dtype == b.dtype and a.shape == b.shape
                and a.tobytes() == b.tobytes())

    def describe(self):
        return f"{self.family} array" + (f" ({self.ndim}-D)" if self.ndim is not None else "")


@dataclasses.dataclass(frozen=True)
class Scalar(Spec):
    """A python int, float, bool or str."""

    type: type

    def coerce(self, value, node, field):
        value = to_numpy(value)
        if isinstance(value, np.ndarray):
            if value.size != 1:
                raise GraphError(f"must be a single {self.type.__name__}, got shape {value.shape}",
                                 node=node, field=field, fix="pass a scalar")
            value = value.reshape(()).item()
        if isinstance(value, bytes) and self.type is str:
            value = value.decode("utf8")
        if isinstance(value, np.generic):
            value = value.item()
        if self.type is str:
            if not isinstance(value, str):
                raise GraphError(f"must be a string, got {type(value).__name__}", node=node,
                                 field=field, fix="pass a str")
            return value
        if self.type is bool:
            if not isinstance(value, (bool, int)) or value not in (0, 1):
                raise GraphError(f"must be a bool, got {value!r}", node=node, field=field,
                                 fix="pass True or False")
            return bool(value)
        if self.type is int:
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or (isinstance(value, float) and not math.isfinite(value))
                    or int(value) != value):
                raise GraphError(f"must be an int, got {value!r}", node=node, field=field,
                                 fix="pass a whole number")
            return int(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GraphError(f"must be a number, got {value!r}", node=node, field=field,
                             fix="pass a float")
        return float(value)

    def equal(self, a, b):
        if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
            return True
        return type(a) is type(b) and a == b

    def describe(self):
        return self.type.__name__


@dataclasses.dataclass(frozen=True)
class Ints(Spec):
    """A fixed-length tuple of ints (stride, padding, ...); a single int is repeated. With
    `n=None`, any length (a shape). With `allow_str`, also one of the given strings."""

    n: int | None = None
    allow_str: tuple[str, ...] = ()

    def coerce(self, value, node, field):
        value = to_numpy(value)
        if isinstance(value, bytes):
            value = value.decode("utf8")
        if isinstance(value, str):
            if value in self.allow_str:
                return value
            raise GraphError(f"got {value!r}", node=node, field=field,
                             fix=f"use ints{' or one of ' + str(self.allow_str) if self.allow_str else ''}")
        arr = np.asarray(value)
        if arr.dtype.kind == "f" and arr.size and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu" and not (arr.size == 0 and self.n is None):
            raise GraphError(f"must be int(s), got {value!r}", node=node, field=field,
                             fix="pass ints")
        if arr.ndim == 0:
            if self.n is None:
                raise GraphError(f"must be a sequence of ints, got {value!r}", node=node,
                                 field=field, fix="pass a tuple")
            arr = np.repeat(arr, self.n)
        if arr.ndim != 1 or (self.n is not None and arr.shape[0] != self.n):
            raise GraphError(f"must be {self.n or 'a tuple of'} int(s), got {value!r}", node=node,
                             field=field, fix=f"pass a tuple of {self.n or 'any number of'} ints")
        return tuple(int(v) for v in arr)

    def describe(self):
        return "shape" if self.n is None else f"{self.n} ints"


@dataclasses.dataclass(frozen=True)
class Strs(Spec):
    """A tuple of strings."""

    def coerce(self, value, node, field):
        if isinstance(value, (str, bytes)):
            value = (value,)
        value = to_numpy(value)
        out = []
        for v in np.asarray(value, dtype=object).reshape(-1) if isinstance(value, np.ndarray) else value:
            if isinstance(v, bytes):
                v = v.decode("utf8")
            if not isinstance(v, str):
                raise GraphError(f"must hold strings, got {v!r}", node=node, field=field,
                                 fix="pass a tuple of str")
            out.append(v)
        return tuple(out)


@dataclasses.dataclass(frozen=True)
class Optional(Spec):
    """`inner` or None; None is not written to the file."""

    inner: Spec

    def coerce(self, value, node, field):
        return None if value is None else self.inner.coerce(value, node, field)

    def equal(self, a, b):
        if a is None or b is None:
            return a is None and b is None
        return self.inner.equal(a, b)

    def describe(self):
        return f"optional {self.inner.describe()}"


@dataclasses.dataclass(frozen=True)
class Records(Spec):
    """A tuple of `Record`s of one class (RuleSet's predicates and rules)."""

    cls: type

    def coerce(self, value, node, field):
        if isinstance(value, self.cls):
            value = (value,)
        out = []
        for i, v in enumerate(value):
            if isinstance(v, dict):
                v = self.cls(**v)
            if not isinstance(v, self.cls):
                raise GraphError(f"item {i} must be a {self.cls.__name__}, got {type(v).__name__}",
                                 node=node, field=field, fix=f"build it with {self.cls.__name__}(...)")
            out.append(v)
        return tuple(out)

    def equal(self, a, b):
        return len(a) == len(b) and all(x == y for x, y in zip(a, b))


@dataclasses.dataclass(frozen=True)
class NamedArrays(Spec):
    """A dict str -> real ndarray (RuleSet's named, shared weights)."""

    def coerce(self, value, node, field):
        if not isinstance(value, dict):
            raise GraphError("must be a dict of name -> array", node=node, field=field,
                             fix="pass {'w1': array, ...}")
        inner = Array("real")
        return {str(k): inner.coerce(v, node, f"{field}[{k!r}]") for k, v in value.items()}

    def equal(self, a, b):
        inner = Array("real")
        return a.keys() == b.keys() and all(inner.equal(a[k], b[k]) for k in a)


def param(spec: Spec, default: Any = MISSING, *, default_factory: Any = MISSING):
    """Declare a dataclass field with its spec."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"spec": spec})


def specs(cls_or_obj) -> list[tuple[str, Spec]]:
    """The (name, spec) pairs of a record class, in declaration order."""
    return [(f.name, f.metadata["spec"]) for f in dataclasses.fields(cls_or_obj)
            if "spec" in f.metadata]


def _coerce_metadata(value, node):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GraphError("metadata must be a dict", node=node, field="metadata",
                         fix="pass {str: str | number | bool}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k or "/" in k or k in (".", ".."):
            raise GraphError(f"metadata key {k!r} must be a non-empty string without '/'",
                             node=node, field="metadata", fix="use plain string keys")
        v = to_numpy(v)
        if isinstance(v, np.ndarray) and v.ndim == 0:
            v = v.item()
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, bytes):
            v = v.decode("utf8")
        if isinstance(v, np.ndarray) and (v.dtype.kind in "biu" or (
                v.dtype.kind == "f" and v.dtype.itemsize in (2, 4, 8))):
            v = v.copy()
            v.flags.writeable = False
        elif isinstance(v, int) and not isinstance(v, bool) and not -2**63 <= v < 2**63:
            raise GraphError(f"metadata[{k!r}] = {v} does not fit in 64 bits", node=node,
                             field="metadata", fix="store it as a float or a string")
        elif not isinstance(v, (str, int, float, bool)):
            raise GraphError(f"metadata[{k!r}] = {v!r} is not a str, number, bool or numeric array",
                             node=node, field="metadata", fix="store plain values only")
        out[str(k)] = v
    dt = out.get("dt")
    if dt is not None and (isinstance(dt, (bool, str, np.ndarray)) or not math.isfinite(dt)
                           or dt <= 0):
        raise GraphError(f"metadata['dt'] = {dt!r} is not a time step", node=node,
                         field="metadata", fix="set metadata['dt'] to seconds > 0 (e.g. 1e-3) "
                                               "or remove it and pass dt= where it is needed")
    return out


def metadata_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
                    and x.dtype == y.dtype and np.array_equal(x, y)):
                return False
        elif not Scalar(type(x)).equal(x, y):
            return False
    return True


@dataclasses.dataclass(frozen=True, eq=False)
class Record:
    """A frozen dataclass whose fields are coerced and compared through their specs."""

    def __post_init__(self):
        name = getattr(self, "_error_name", None)
        for fname, spec in specs(self):
            object.__setattr__(self, fname, spec.coerce(getattr(self, fname), name, fname))

    def __eq__(self, other):
        if type(self) is not type(other):
            return NotImplemented
        return all(spec.equal(getattr(self, n), getattr(other, n)) for n, spec in specs(self))

    __hash__ = object.__hash__

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def __repr__(self):
        parts = []
        for n, spec in specs(self):
            v = getattr(self, n)
            if isinstance(v, np.ndarray):
                v = f"<{v.dtype} {v.shape}>" if v.size > 8 else np.array2string(v, separator=",")
            elif isinstance(v, dict) and isinstance(spec, NamedArrays):
                v = "{" + ", ".join(f"{k}: <{a.dtype} {a.shape}>" for k, a in v.items()) + "}"
            parts.append(f"{n}={v}")
        return f"{type(self).__name__}({', '.join(parts)})"
