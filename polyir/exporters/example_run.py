"""The example run of the fx exporter: the traced module runs once on the example input and every
fx node's value is kept, so handlers and function rules see real shapes and tensors.

State a one-step model reads back before it is computed is MISSING in the first run (anything
computed from it too, except that a sum gives its known operand); a second run replaces such
entries with zeros of the shape the first run found. A module whose handler has an
`example_step` (one time step of a module that loops over time inside) runs through it.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from ..ir.errors import GraphError
from .functions import target_name
from .handlers import one_step
from .state import MISSING, StateView, has_missing

__all__ = ["Recorder", "example_values"]

_SUMS = {"add", "iadd", "add_", "__add__", "__radd__", "__iadd__"}

class Recorder(fx.Interpreter):
    """Runs the traced module and keeps every node's value. Nodes fed by a MISSING value give
    MISSING (a sum gives its known operand)."""

    def __init__(self, gm):
        super().__init__(gm, garbage_collect_values=False)
        self.extra_traceback = False  # our errors name the fx node already
        self.values: dict[str, Any] = {}

    def run_node(self, n):
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            if n.op in ("call_module", "call_function", "call_method") and (
                    has_missing(args) or has_missing(kwargs)):
                is_add = (n.target if isinstance(n.target, str)
                          else getattr(n.target, "__name__", "")) in _SUMS
                known = [a for a in args[:2] if a is not MISSING]
                result = known[0] if is_add and known else MISSING
            else:
                try:
                    result = getattr(self, n.op)(n.target, args, kwargs)
                except GraphError:
                    raise
                except Exception as exc:
                    what = f"{n.op} {target_name(n)}"
                    shapes = ", ".join(str(tuple(a.shape)) for a in args
                                       if isinstance(a, torch.Tensor))
                    raise GraphError(f"running the model on the example input failed at fx node "
                                     f"{n.name!r} ({what}, given {shapes or 'no tensor'}): "
                                     f"{str(exc).strip()}", node=n.name, field="input",
                                     fix="pass an example input shaped as the model expects, "
                                         "batch dim first") from exc
        self.values[n.name] = result
        return result

    def call_module(self, target, args, kwargs):
        """A module whose handler has an `example_step` (it loops over time inside) runs one
        step through it."""
        return one_step(self.fetch_attr(target), *args, **kwargs)



def example_values(gm: fx.GraphModule, inputs: tuple, state_leaves: dict, state_name: str | None,
                   n_inputs: int, nodes: list) -> dict:
    """Every fx node's value (by name) when `gm` runs once on the example `inputs`, in eval
    mode without grad. A stateful model's state is first MISSING (module-owned entries read as
    None); if entries hold values read back one step late, a second run reads zeros of their
    shape instead."""
    modes = {m: m.training for m in gm.modules()}
    gm.eval()
    try:
        with torch.no_grad():
            leaves = {p: (None if kind == "token" else MISSING)
                      for p, (kind, _) in state_leaves.items()}
            args = []
            for i, p in enumerate(n for n in nodes if n.op == "placeholder"):
                if i < n_inputs:
                    args.append(inputs[i])
                elif p.target == state_name:  # the whole state may be one leaf
                    args.append(leaves[()] if () in leaves else StateView(leaves))
                else:
                    args.append(p.args[0] if p.args else None)
            rec = Recorder(gm)
            rec.run(*args)
            values = rec.values
            late = {p: src for p, (kind, src) in state_leaves.items() if kind == "value"}
            if late:
                for p, src in late.items():
                    v = values.get(src)
                    if not isinstance(v, torch.Tensor):
                        raise GraphError(f"state{list(p)} is computed from state read back "
                                         "(a delay of two steps or more)", node=src,
                                         field="state", fix="return values computed in this "
                                                            "step as the new state")
                    leaves[p] = torch.zeros_like(v)
                args = [leaves[()] if isinstance(a, type(MISSING)) and () in leaves else a
                        for a in args]
                rec = Recorder(gm)
                rec.run(*args)
                values = rec.values
    finally:
        for m, t in modes.items():
            m.train(t)
    return values

