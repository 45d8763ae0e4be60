"""What the spiking libraries' handlers share: decays as Euler time constants at dt = 1, parameters
broadcast to the neuron shape, and a neuron with its recurrent layer as one cycle."""
from __future__ import annotations

import numpy as np

from .... import ir
from ..polyir_nn import _full as full

__all__ = ["decays", "one_minus_inverse", "full", "with_recurrence", "set_euler"]


def set_euler(ctx, dt: float) -> None:
    """The library steps its neurons by Euler at dt: the graph's metadata says so."""
    ctx.set_metadata("dt", float(dt))
    ctx.set_metadata("discretization", "euler")


def decays(ctx, decay) -> np.ndarray:
    """The decay per step, clamped to [0, 1] as snnTorch does."""
    return np.clip(ctx.array(decay).astype(np.float64), 0, 1)


def one_minus_inverse(ctx, decay, field: str, fix: str):
    """1 / (1 - decay) per element (the Euler time constant at dt = 1 of that decay); a decay
    of 1 (no leak) has none."""
    d = decays(ctx, decay)
    if np.any(d == 1):
        raise ctx.error(f"{field} = 1 (a state that never decays) has no time constant",
                        field=field, fix=fix)
    return full(ctx, (1 / (1 - d)).astype(ctx.float_dtype))


def with_recurrence(ctx, neuron, layer) -> ir.Graph:
    """neuron -> recurrent layer -> neuron, the layer adding into the neuron's input; the edge
    leaving the neuron is read one step late, so the layer sees the previous step's spikes.
    `neuron` may be a chain (a list): the layer then adds into the first node's input and reads
    the last one's output (a synaptic current before the spiking membrane)."""
    chain = list(neuron) if isinstance(neuron, (list, tuple)) else [neuron]
    names = [f"stage_{i}" for i in range(len(chain) - 1)] + ["neuron"]
    g = ir.Graph()
    g.add("input", ir.Input(ctx.input_shape))
    for name, node in zip(names, chain):
        g.add(name, node)
    g.add("recurrent", layer)
    g.add("output", ir.Output(ctx.input_shape))
    g.connect("input", names[0])
    for src, dst in zip(names, names[1:]):
        g.connect(src, dst)
    g.connect("neuron", "recurrent")
    g.connect("recurrent", names[0])
    g.connect("neuron", "output")
    return g
