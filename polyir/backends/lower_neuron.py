"""Lowering rule of the neuron kinds (ir.NEURONS): one `neuron` op per node, its C statements
(`neuron_body`) and step coefficients read from the kinds' own facts (ir/kinds/neurons.py).
"""
from __future__ import annotations

import numpy as np

from .. import ir
from .lower_dense import real_table, one_input
from .program import RealSpelling, lower_rule


def neuron_body(node, real: RealSpelling = RealSpelling()) -> tuple[list[str], list[str]]:
    """C statements for one time step of neuron `node`, and the constant tables they read,
    spelled for the program's real type (`real`: literals and functions; locals are `real_t`).

    Locals: `x` the summed input, `s_<state>` each state variable (loaded before, stored after),
    `y` the output; constants `<state>_a`, `_b`, `_c`, `_k` (the step coefficients of
    ir.Neuron.step_coefficients: s = a s + b x + c + k d, in that operation order, as torch
    applies them) and, for spiking kinds, `threshold` and `reset`. The spike, reset and their
    extension fields follow polyir.nn.neurons (the torch layer) statement by statement."""
    cls = type(node)
    lines, consts = [], []
    spk = cls.spike
    v = f"s_{spk.state}" if spk else None
    if spk:
        consts += ["threshold", "reset"]
        test = "threshold"
        zero, one = real.num(0), real.num(1)

        def count(value):
            above = f"{value} {node.threshold_compare} {test}"
            if node.spike_rule == "multi":
                spikes = f"{real.fn('floor')}({value} / {test})"
                if node.max_spikes is not None:  # at most max_spikes in one step
                    spikes = f"{real.fn('fmin')}({spikes}, {real.num(node.max_spikes)})"
                return f"({above} ? {spikes} : {zero})"
            return f"({above} ? {one} : {zero})"

        if node.reset_delay or node.reset_mode == "subtract_pending_in_test":
            # the carried membrane's spikes reset it in this step (or enter its spike test)
            lines.append(f"const real_t pending = {count(v)};")
            if node.reset_mode == "v_reset":
                lines.append(f"{v} = pending > {zero} ? reset : {v};")
    for st in cls.states:
        expr = f"{st.name}_a * s_{st.name} + {st.name}_b * x + {st.name}_c"
        consts += [f"{st.name}_a", f"{st.name}_b", f"{st.name}_c"]
        if st.drive != "input":
            expr += f" + {st.name}_k * s_{st.drive}"
            consts.append(f"{st.name}_k")
        lines.append(f"const real_t n_{st.name} = {expr};")
    lines += [f"s_{st.name} = n_{st.name};" for st in cls.states]
    if not spk:
        return lines + [f"y = s_{cls.states[-1].name};"], consts
    if node.reset_delay and node.reset_mode == "subtract":
        lines.append(f"{v} = {v} - pending * threshold;")
    elif node.reset_delay and node.reset_mode == "v_reset_after_update":
        lines.append(f"{v} = pending > {zero} ? reset : {v};")
    if node.reset_mode == "subtract_pending_in_test":
        lines.append(f"const real_t tested = {v} - pending * threshold;")
        lines.append(f"const real_t z = {count('tested')};")
    else:
        lines.append(f"const real_t z = {count(v)};")
    if node.reset_mode in ("subtract", "subtract_pending_in_test") and not node.reset_delay:
        lines.append(f"{v} = {v} - z * threshold;")
    elif not node.reset_delay and node.reset_mode != "none":
        lines.append(f"{v} = z > {zero} ? reset : {v};")
    return lines + ["y = z;"], consts


@lower_rule(*ir.NEURONS.values())
def _neuron(ctx, name, node, values):
    x = one_input(values, name)
    dt = ctx.need_dt(name)
    n = ctx.size(x)
    cls = type(node)
    wide = {f: np.asarray(a, np.float64) for f, a in node.parameters().items()}
    coeffs = cls.step_coefficients(wide, dt, ctx.discretization)
    tables = {}
    for st, q in coeffs.items():
        tables.update({f"{st}_a": q.a, f"{st}_b": q.b, f"{st}_c": q.c, f"{st}_k": q.k})
    if cls.spike:
        tables.update(threshold=wide[cls.spike.threshold], reset=wide[cls.spike.reset])
    body, used = neuron_body(node, ctx.scalar)
    consts = {k: np.broadcast_to(real_table(tables[k]).reshape(-1), (n,)).copy() for k in used}
    state = tuple(ctx.buffer("real", n, name, persistent=True) for _ in cls.states)
    out = ctx.result(name, "real", n)
    return ctx.emit("neuron", name, out, (x,), n=n, neuron=cls.__name__, dt=dt,
                    discretization=ctx.discretization, states=cls.state_names(), state=state,
                    body=body, consts=consts)
