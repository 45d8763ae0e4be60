"""Export handlers for Norse's neuron cells, recognised by class name and attributes.

Norse (1.1) `LIFBoxCell` / `LIFCell`: forward(x, state) -> (z, state); one Euler step of NIR's
  LIF / CubaLIF at the cell's dt with tau = 1 / tau_inv, r = 1, reset to v_reset at once;
  LIFCell adds the whole input to the current (w_in = tau_syn / dt, see the NIR conventions).
"""
from __future__ import annotations

import numpy as np

from .... import ir
from .. import recogniser
from .common import full, set_euler


def _is_norse_cell(m) -> bool:
    return (type(m).__name__ in ("LIFBoxCell", "LIFCell") and hasattr(m, "p")
            and hasattr(m, "dt") and type(m).__module__.startswith("norse"))


@recogniser("norse.LIFBoxCell/LIFCell", _is_norse_cell, returns_state=True)
def _norse_cell(ctx, name, m, values):
    p, dt = m.p, float(m.dt)
    reset = getattr(getattr(p, "reset_method", None), "__name__", "reset_value")  # LIFBox only
    if reset != "reset_value":
        raise ctx.error(f"Norse reset_method {reset} has no polyir "
                        "equivalent", field="reset_method", fix="use Norse's reset_value")
    set_euler(ctx, dt)
    inverse = (lambda t: full(ctx, (1 / ctx.array(t).astype(np.float64)).astype(ctx.float_dtype)))
    common = {"r": full(ctx, np.ones((), ctx.float_dtype)), "v_leak": full(ctx, p.v_leak),
              "v_threshold": full(ctx, p.v_th), "v_reset": full(ctx, p.v_reset)}
    if type(m).__name__ == "LIFBoxCell":
        return ir.LIF(inverse(p.tau_mem_inv), **common)
    tau_syn = inverse(p.tau_syn_inv)
    return ir.CubaLIF(tau_syn, inverse(p.tau_mem_inv), w_in=tau_syn / dt, **common)


