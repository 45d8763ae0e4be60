"""The stateful-module protocol of the fx exporter: modules that return `(out, state)` and
one-step models `forward(x, state) -> (y, new_state)`.

Stateful models. Modules that return `(out, state)` (polyir.nn's neurons, Delay) are stateful
nodes: `out, s = self.lif(x, s)` takes `[0]` as the node's value; the state is the node's own.
A model with a parameter whose name contains "state" is a one-step model:

    def forward(self, x, state=None):
        if state is None:
            state = (None, None)
        z_prev, s_lif = state
        h = self.fc(x)
        if z_prev is not None:            # a proxy while tracing: the recurrent term is kept
            h = h + self.rec(z_prev)
        z, s_lif = self.lif(h, s_lif)
        return self.out(z), (z, s_lif)

It must return `(outputs, new_state)`, with new_state laid out like state. A state entry that is
a module's own state (`s_lif`) needs nothing; an entry holding a value (`z`) read back as
`z_prev` becomes a recurrent edge: whatever the model computes from `z_prev` is read one step
late, as the polyir walkers read recurrent edges. The exporter checks that the graph's recurrent
edges are exactly those, and says so otherwise.

A model that loops over time inside `forward` cannot be traced (the loop runs over a traced
value); export its one-step module instead (see docs/export.md).
"""
from __future__ import annotations

import dataclasses
import inspect
import operator
import warnings

import torch.fx as fx
from torch import nn

from .. import ir
from ..ir.errors import GraphError, PolyirWarning
from .handlers import lookup

__all__ = ["Pending", "Value", "Token", "Pair", "StateRef", "Meta", "META", "MISSING", "StateView",
           "StateProtocol", "signature", "leaves", "stateful_result", "has_missing"]


# --- values flowing through the conversion -------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Pending:
    """A state entry read back one step late; resolved to its producer at the end."""
    path: tuple


@dataclasses.dataclass(frozen=True)
class Value:
    """A tensor value: the sum of its terms (source, delay); delay 1 = read one step late."""
    terms: tuple


@dataclasses.dataclass(frozen=True)
class Token:
    """The state a stateful module call returns (owned by that node)."""
    fx_node: str


@dataclasses.dataclass(frozen=True)
class Pair:
    """What a stateful module call returns: its output, then `size - 1` entries of its own state
    (`out, state = lif(x, state)`, or `spk, syn, mem = synaptic(x)`)."""
    value: Value
    token: Token
    size: int = 2


@dataclasses.dataclass(frozen=True)
class StateRef:
    path: tuple


class Meta:
    """Shapes and sizes (x.shape, x.size(0)): usable only as arguments of view/reshape."""


META = Meta()


class Missing:
    """A value that depends on a state entry not known yet (first shape pass)."""

    def __repr__(self):
        return "<missing>"


MISSING = Missing()


class StateView:
    """The example state fed to the traced model: leaves by path."""

    def __init__(self, leaves: dict, path: tuple = ()):
        self._leaves, self._path = leaves, path

    def __getitem__(self, key):
        p = self._path + (key,)
        if p in self._leaves:
            return self._leaves[p]
        return StateView(self._leaves, p)


def has_missing(obj) -> bool:
    if obj is MISSING:
        return True
    if isinstance(obj, (tuple, list)):
        return any(has_missing(o) for o in obj)
    if isinstance(obj, dict):
        return any(has_missing(o) for o in obj.values())
    return False


def stateful_result(result) -> bool:
    if isinstance(result, (list, tuple)):
        return any(stateful_result(r) for r in result)
    if isinstance(result, ir.Graph):  # Graph.stateful is a property: ask the instance
        return result.stateful
    return bool(getattr(type(result), "stateful", False))


def leaves(struct, path):
    """(path, leaf) pairs of a nested tuple/list/dict structure."""
    if isinstance(struct, (tuple, list)):
        for i, s in enumerate(struct):
            yield from leaves(s, path + (i,))
    elif isinstance(struct, dict):
        for k, s in struct.items():
            yield from leaves(s, path + (k,))
    elif struct is not None:
        yield path, struct


def signature(model: nn.Module, n_inputs: int):
    """(state parameter name or None, concrete_args for the other extra parameters)."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None, None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return None, None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < n_inputs:
        raise GraphError(f"{type(model).__name__}.forward takes {len(positional)} positional "
                         f"input(s), the example gives {n_inputs}", field="example_input",
                         fix="pass one example tensor per input (a tuple for several)")
    extra = [p for p in params if p not in positional[:n_inputs]]
    states = [p for p in extra if "state" in p.name.lower()]
    if len(states) > 1:
        raise GraphError(f"forward has several state parameters {[p.name for p in states]}",
                         field="state", fix="gather the state in one parameter (a tuple)")
    concrete = {}
    for p in extra:
        if p in states:
            continue
        if p.default is p.empty:
            raise GraphError(f"forward's parameter {p.name!r} has no default and is not an "
                             "input", field="example_input",
                             fix="pass it in the example input tuple, or give it a default")
        concrete[p.name] = p.default
    return (states[0].name if states else None), concrete or None



class StateProtocol:
    """The exporter's state bookkeeping (mixed into the converter): which calls return
    (out, state) pairs, where each entry of the returned state comes from, that every module gets
    back its own state, and which edges are read one step late."""

    def split_outputs(self, out_struct, state_name: str | None):
        """(outputs, new state) of the model's return value; fills `state_leaves`:
        path -> ("token", call node) | ("value", fx node)."""
        whole_pair = isinstance(out_struct, fx.Node) and out_struct.name in self.pair_nodes
        if state_name is not None and whole_pair:  # return module(x, state): (out, its state)
            y_struct, s_struct = out_struct, None
        elif state_name is not None:
            if not (isinstance(out_struct, (tuple, list)) and len(out_struct) == 2):
                raise GraphError(f"the model takes a state ({state_name!r}) but does not return "
                                 "(outputs, new_state)", node="output", field="state",
                                 fix="return outputs, new_state")
            y_struct, s_struct = out_struct
        else:
            y_struct, s_struct = out_struct, None
        # state leaves: path -> ("token", call node) | ("value", fx node)
        self.state_leaves: dict[tuple, tuple] = {}
        if state_name is not None and whole_pair:
            self.state_leaves[()] = ("token", out_struct.name)
        for path, leaf in leaves(s_struct, ()):
            if isinstance(leaf, fx.Node):
                src = leaf.args[0] if (leaf.op == "call_function" and leaf.target is
                                       operator.getitem and isinstance(leaf.args[1], int)
                                       and leaf.args[1] != 0) else None
                if isinstance(src, fx.Node) and src.name in self.pair_nodes:
                    self.state_leaves[path] = ("token", src.name)
                else:
                    self.state_leaves[path] = ("value", leaf.name)
        return y_struct

    def _pair_nodes(self, nodes) -> set[str]:
        pairs = set()
        for n in nodes:
            if n.op != "call_module":
                continue
            h = lookup(self.model.get_submodule(n.target)) if n.target else None
            if h is None:
                continue
            if h.returns_state or (h.returns_state is None and n.users and all(
                    u.op == "call_function" and u.target is operator.getitem
                    for u in n.users)):
                pairs.add(n.name)
        return pairs


    def _check_state_tokens(self, state_name):
        for call, args in self.token_inputs.items():
            for arg in args or [None]:
                self._check_state_token(call, arg, state_name)

    def _check_state_token(self, call, arg, state_name):
        """A state argument of a stateful call must be that call's own state read back."""
        if not isinstance(arg, fx.Node):
            if state_name is not None:
                warnings.warn(f"fx node {call!r}: the model does not pass this module its "
                              "state from the previous step (it restarts every call); the "
                              "exported graph carries the state from step to step",
                              PolyirWarning, stacklevel=5)
            return
        src = self.env.get(arg.name)
        if isinstance(src, StateRef):
            leaf = self.state_leaves.get(src.path)
            if leaf == ("token", call):
                return
            raise GraphError(f"fx node {call!r} receives state{list(src.path)}, but the model "
                             f"returns {'nothing' if leaf is None else repr(leaf[1])} there",
                             node=call, field="state",
                             fix="return each module's own new state at the place it reads it")
        raise GraphError(f"fx node {call!r} receives a state that is not its own",
                         node=call, field="state",
                         fix="pass a module only the state it returned")

    def resolve_recurrent(self) -> set:
        """Connect the state read back to its producers; returns the edges the model reads one
        step late."""
        g = self.graph
        required = set()
        for ref, d, dst, port in self.edges:
            srcs = [(ref, d)]
            if isinstance(ref, Pending):
                kind, src = self.state_leaves[ref.path]
                terms = self.env[src].terms if isinstance(self.env.get(src), Value) else ()
                if not terms:
                    raise GraphError(f"state{list(ref.path)} is not a value computed by the graph",
                                     node=dst, field="state", fix="return a layer's output")
                srcs = []
                for r, dd in terms:
                    if dd or isinstance(r, Pending):
                        raise GraphError(f"state{list(ref.path)} is computed from state read "
                                         "back (a delay of two steps or more)", node=dst,
                                         field="state",
                                         fix="return values computed in this step as new state")
                    srcs.append((r, 1))
            for r, dd in srcs:
                if isinstance(g.nodes.get(r), ir.Input) and dd:
                    raise GraphError(f"the input {r!r} is read one step late", node=dst,
                                     field="state", fix="feed inputs of this step only")
                if isinstance(ref, Pending):  # state read back: the delay sits on this edge
                    g.connect(r, dst, None if port == "input" else port)
                    required.add((r, dst) if port == "input" else (r, dst, port))
        return required

    def check_recurrent(self, required: set) -> None:
        g = self.graph
        _, recurrent = g.order()
        if set(map(tuple, recurrent)) != required:
            raise GraphError(f"the recurrent edges polyir derives ({sorted(recurrent)}) differ "
                             f"from the ones the model reads one step late ({sorted(required)})",
                             node=sorted(required ^ set(recurrent))[0][1], field="edges",
                             fix="feed the state read back (e.g. z_prev) into the stateful node "
                                 "of its cycle, and compute it before that node")
