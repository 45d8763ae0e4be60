"""Reading NIR files as the spiking library that wrote them meant them: `apply_convention`.

NIR fixes the neuron equations but not every exporter follows them: each library writes its own
time unit, fills fields it does not model with placeholders, and has reset and spike rules NIR
cannot express. One function per library in `CONVENTIONS` rewrites a graph read from that
library's NIR file into the polyir graph that reproduces the library's own simulation: it fixes
fields, sets the neuron extension fields (reset_mode, reset_delay, spike_rule, threshold_compare)
and records the time step and discretization in the graph's metadata ('dt', 'discretization',
'convention'). Without a convention nothing is changed. The evidence, library by library, is in
docs/spiking.md.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .errors import GraphError
from .graph import Graph
from .kinds.neurons import CubaLIF, Neuron, SpikingNeuron
from .kinds.nir import Input, Output

__all__ = ["CONVENTIONS", "apply_convention", "convention_entry"]


@dataclasses.dataclass(frozen=True)
class Convention:
    """What a library's NIR exporter means: its simulation step and discretization, the extension
    fields of its spiking neurons, and `rewrite(dt, node)` for the fields it writes its own way."""

    dt: float
    discretization: str
    spike_options: dict
    rewrite: object = None
    #: the feature shape of an Input/Output type the exporter wrote with other dims in it
    #: (sinabs: a leading time dim; rockpool: its sample's batch and time dims), or None
    io_shape: object = None


def _norse(dt, node):
    # Norse writes tau = dt * (1 / tau_inv), dt times the true time constant: divide it back.
    node = node.replace(**{f: getattr(node, f) / dt for f in node.time_constant_fields()})
    # LIFCell (CubaLIF) writes no w_in: its input jumps onto the current at full size before
    # the membrane step (j <- (1 - dt/tau_syn) j + x), which NIR's Euler step gives with
    # w_in = tau_syn / dt.
    if isinstance(node, CubaLIF):
        node = node.replace(w_in=node.tau_syn / dt)
    return _norse_membrane_start(node)


def _norse_membrane_start(node):
    """Norse starts a membrane at v_leak, polyir at 0: a spiking neuron's membrane is read as
    Norse's minus v_leak (the same dynamics with rest 0, threshold and reset moved by v_leak); a
    leaky integrator's output is its membrane itself, which no field can move."""
    v_leak = getattr(node, "v_leak", None)
    if v_leak is None or not np.any(v_leak):
        return node
    if not isinstance(node, SpikingNeuron):
        raise GraphError(f"Norse starts its leaky integrator's membrane at v_leak {v_leak}, and "
                         "the NIR file's output is that membrane; polyir starts at 0",
                         field="v_leak", fix="export the Norse model with polyir.export (it "
                                             "adds v_leak back after the integrator), or read "
                                             "the file without a convention (NIR's start at 0)")
    return node.replace(v_leak=np.zeros_like(v_leak), v_threshold=node.v_threshold - v_leak,
                        v_reset=node.v_reset - v_leak)


def _rockpool(dt, node):
    # Euler's s <- (1 - dt/tau) s + (dt gain/tau) drive equals a decay d = exp(-dt/tau) with
    # tau' = dt / (1 - d); the current takes its input decayed too (w_in = b tau_syn' / dt), the
    # membrane the whole new current (r = tau_mem' / dt).
    if not isinstance(node, CubaLIF):
        raise GraphError(f"rockpool's NIR {type(node).__name__} has no tested reading",
                         field="convention", fix="export rockpool's LIFTorch (a CubaLIF), or "
                                                  "read the file without a convention")
    decay = {f: np.exp(-dt / getattr(node, f).astype(np.float64)) for f in ("tau_syn", "tau_mem")}
    tau = {f: dt / (1 - d) for f, d in decay.items()}
    dtype = node.tau_mem.dtype
    return node.replace(tau_syn=tau["tau_syn"].astype(dtype), tau_mem=tau["tau_mem"].astype(dtype),
                        r=(tau["tau_mem"] / dt).astype(dtype),
                        w_in=(decay["tau_syn"] * tau["tau_syn"] / dt).astype(dtype))


CONVENTIONS = {
    # snnTorch 1.0 export_nir: dt = 1e-4 hard-coded, tau = dt/(1-beta), r = tau/dt, so NIR's
    # Euler step at that dt is snnTorch's v <- beta v + x (Synaptic: w_in = tau_syn/dt gives
    # i <- alpha i + x, and the membrane takes the new current). Leaky/Synaptic default
    # reset_mechanism 'subtract', the reset taken from the previous step's membrane; spike when
    # mem - threshold > 0. The file writes v_reset = 0 whatever the mechanism was.
    "snntorch": Convention(1e-4, "euler", {"reset_mode": "subtract", "reset_delay": True}),
    # Norse 1.1 to_nir: tau = dt / tau_inv at dt = 1e-3 (the cells' default), Euler steps,
    # reset to v_reset at once, spike when v - v_th > 0, membranes starting at v_leak. The file
    # has no v_reset (read as 0, Norse's default).
    "norse": Convention(1e-3, "euler", {}, _norse),
    # sinabs 3.1 to_nir: time in steps (dt = 1), exact decay alpha = exp(-1/tau) with the input
    # scaled by 1 - alpha (norm_input), several spikes per step (floor(v / thr), v >= thr),
    # subtracting the threshold once per spike in the same step.
    "sinabs": Convention(1.0, "exact", {"reset_mode": "subtract", "spike_rule": "multi",
                                        "threshold_compare": ">="},
                         io_shape=lambda shape: shape[1:] if len(shape) > 1 else shape),
    # rockpool 3.1 to_nir (LIFTorch -> CubaLIF): its step at dt = 1e-3 is i <- b (i + x),
    # v <- a v + i, a = exp(-dt/tau_mem), b = exp(-dt/tau_syn); spikes floor(v / thr) once
    # v >= thr, subtracted once each. Its r = tau_mem exp(-dt/tau_mem) / dt is an approximation
    # of that, replaced by the Euler parameters that give the step exactly (`_rockpool`).
    "rockpool": Convention(1e-3, "euler", {"reset_mode": "subtract", "spike_rule": "multi",
                                           "threshold_compare": ">="}, _rockpool,
                           io_shape=lambda shape: shape[-1:]),
}


def _node(conv: Convention, node, top: bool):
    if isinstance(node, Graph):
        return _rewrite(conv, node, False)
    if top and conv.io_shape and isinstance(node, (Input, Output)):
        return node.replace(shape=tuple(conv.io_shape(tuple(node.shape))))
    if isinstance(node, SpikingNeuron):
        node = node.replace(**conv.spike_options)
    if isinstance(node, Neuron) and conv.rewrite:
        node = conv.rewrite(conv.dt, node)
    return node


def _rewrite(conv: Convention, g: Graph, top: bool) -> Graph:
    return Graph({name: _node(conv, node, top) for name, node in g.nodes.items()}, g.edges,
                 metadata=dict(g.metadata))


def convention_entry(convention: str) -> Convention:
    """The table entry of a library's convention; a GraphError naming the known ones if none."""
    if convention not in CONVENTIONS:
        raise GraphError(f"unknown NIR convention {convention!r}", field="convention",
                         fix=f"use one of {sorted(CONVENTIONS)}, or none for NIR's own reading")
    return CONVENTIONS[convention]


def apply_convention(graph: Graph, convention: str | None) -> Graph:
    """The graph as the library `convention` ('snntorch', 'norse', 'sinabs', 'rockpool') meant
    the NIR file it wrote (not checked: the reader checks the result); None returns the graph
    unchanged."""
    if convention is None:
        return graph
    conv = convention_entry(convention)
    out = _rewrite(conv, graph, True)
    out.metadata.update(dt=conv.dt, discretization=conv.discretization, convention=convention)
    return out
