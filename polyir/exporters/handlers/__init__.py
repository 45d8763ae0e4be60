"""The export handler registry: module class -> handler(ctx, name, module, values).

A handler has the signature of every rule table's rule (polyir.ir.walk): ctx is the
`ExportContext` (shapes, element kind, dtype, errors, graph metadata), name the polyir node name
the module becomes, module the torch module, values {"input": the example input tensor}.

A handler turns one torch module (an fx leaf) into polyir: it returns an IR node, a small Graph
fragment (one Input, one Output; inlined), a list of nodes (a chain), or None (the module is an
identity and is skipped). Registering a class makes it an fx leaf.

    @polyir.exporters.handler(MyGate)
    def _my_gate(ctx, name, module, values):
        return polyir.Activation("sigmoid")

    polyir.exporters.register(MyNoise, None)      # skip MyNoise (identity)

Modules that return `(out, state)` (the leaky-integrator family) are handled when their handler
returns a stateful kind (LIF, CubaLIF, Delay, ...), or when registered with `returns_state=True`.
A module that loops over a time axis inside (sinabs' layers) gives its handler an `example_step`
(module, x) -> y: the example run calls it instead of the module, for one step of x (batch first).

A handler may also carry `check(module) -> (message, field, fix) | None`: a refusal decided by the
module's attributes alone, given before the model's example run. It names the option at fault
even where the module's own forward fails with that option.

Lookup order for a module m: the exact class; a base class whose `forward` m does not override;
then the duck-typed recognisers (difflogic and torchlogix layers, recognised by class name and
attributes without importing those libraries). This module imports neither torch nor polyir.nn:
the built-in handlers load on first use (`load_builtin`).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

__all__ = ["Handler", "HANDLERS", "RECOGNISERS", "handler", "register", "recogniser", "lookup",
           "refusal_of", "one_step", "load_builtin", "SKIP"]


def SKIP(ctx, name, module, values):  # noqa: N802 - a named constant that is a handler
    """The handler of skipped (identity) classes: the value passes through unchanged."""
    return None


@dataclasses.dataclass(frozen=True)
class Handler:
    """fn(ctx, name, module, values) -> node | Graph | list | None; `returns_state` says whether
    the module returns (out, state) (None: decided by the kind fn returns, or by how the model
    uses the result; False: it returns its output only and keeps any state inside, as sinabs'
    layers do); `source` names where it came from (for messages); `check(module)` returns
    (message, field, fix) for a module refused before the model runs, or None;
    `example_step(module, x)`, when given, is what the example run calls instead of the module
    (one time step of a module that loops over a time axis inside)."""

    fn: Callable
    returns_state: bool | None = None
    source: str = "user"
    check: Callable | None = None
    example_step: Callable | None = None


#: module class -> Handler
HANDLERS: dict[type, Handler] = {}
#: (name, match(module) -> bool, Handler), tried in order after the class lookup
RECOGNISERS: list[tuple[str, Callable, Handler]] = []

_BUILTIN = ("torch_nn", "polyir_nn", "logic_libs", "snn_libs")
_OPTIONAL = ("rules",)  # present when polyir.nn.rules is
_loaded = False


def register(cls: type, fn: Callable | None, *, returns_state: bool | None = None,
             builtin: bool = False, check: Callable | None = None,
             example_step: Callable | None = None) -> None:
    """Map module class `cls` to handler `fn` (None: skip the module, an identity); `check` and
    `example_step` as in `Handler`. A built-in registration never replaces a user's."""
    if not isinstance(cls, type):
        raise TypeError(f"register() takes a module class, got {cls!r}")
    h = Handler(SKIP if fn is None else fn, returns_state, "builtin" if builtin else "user", check,
                example_step)
    if builtin:
        HANDLERS.setdefault(cls, h)
    else:
        HANDLERS[cls] = h


def handler(*classes: type, returns_state: bool | None = None, builtin: bool = False,
            check: Callable | None = None, example_step: Callable | None = None):
    """Decorator: `@handler(SomeModule)` registers `fn(ctx, name, module, values)` for each class
    given; `check` and `example_step` as in `Handler`."""
    if not classes:
        raise TypeError("handler() needs at least one module class")

    def decorate(fn):
        for cls in classes:
            register(cls, fn, returns_state=returns_state, builtin=builtin, check=check,
                     example_step=example_step)
        return fn
    return decorate


def recogniser(name: str, match: Callable, *, returns_state: bool | None = None,
               check: Callable | None = None, example_step: Callable | None = None):
    """Decorator: a duck-typed handler tried for modules no class handler knows; `check` and
    `example_step` as in `Handler`."""
    def decorate(fn):
        RECOGNISERS.append((name, match, Handler(fn, returns_state, name, check, example_step)))
        return fn
    return decorate


def load_builtin() -> None:
    """Import the built-in handler modules (torch.nn, polyir.nn, difflogic/torchlogix)."""
    global _loaded
    if _loaded:
        return
    for mod in _BUILTIN:
        importlib.import_module(f"{__name__}.{mod}")
    for mod in _OPTIONAL:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ImportError:
            pass
    _loaded = True


def refusal_of(module) -> tuple[str, str, str] | None:
    """(message, field, fix) when the module's handler refuses it by its attributes (`check`),
    else None."""
    h = lookup(module)
    return h.check(module) if h is not None and h.check is not None else None


def one_step(module, *args, **kwargs):
    """The module's output for one time step of input: through its handler's `example_step`
    where it has one, else the module's own call."""
    h = lookup(module)
    if h is not None and h.example_step is not None:
        return h.example_step(module, *args, **kwargs)
    return module(*args, **kwargs)


def lookup(module) -> Handler | None:
    """The handler for a module instance, or None when nothing knows it."""
    load_builtin()
    cls = type(module)
    h = HANDLERS.get(cls)
    if h is not None:
        return h
    for base in cls.__mro__[1:]:
        h = HANDLERS.get(base)
        if h is not None and getattr(cls, "forward", None) is getattr(base, "forward", None):
            return h
    for _, match, h in RECOGNISERS:
        try:
            if match(module):
                return h
        except Exception:  # a recogniser that trips over an odd module simply does not match
            continue
    return None
