"""Export handlers for polyir.nn's layers: each reads the module's attributes into its kind."""
from __future__ import annotations

import numpy as np

from ... import ir
from ... import nn as pnn
from . import handler


def grad_factor_metadata(m) -> dict:
    """difflogic's grad_factor (a training setting: the input gradient is scaled by it) as node
    metadata, which the torch importer honours; nothing when it is 1."""
    factor = float(getattr(m, "grad_factor", 1.0))
    return {} if factor == 1.0 else {"grad_factor": factor}


def gates_of(logits: np.ndarray) -> np.ndarray:
    """Hard gates = argmax of the stored logits (computed on the stored array, so the IR's
    'gate == argmax(logits)' check holds exactly)."""
    return np.argmax(logits, axis=-1).astype(np.uint8)


@handler(pnn.LogicLayer, builtin=True)
def _logic_layer(ctx, name, m, values):
    logits = ctx.array(m.logits)
    return ir.LogicLayer(ctx.array(m.a, np.int64), ctx.array(m.b, np.int64), gates_of(logits),
                         logits, metadata=grad_factor_metadata(m))


@handler(pnn.LogicTree2d, builtin=True)
def _logic_tree(ctx, name, m, values):
    logits = ctx.array(m.logits)
    return ir.LogicTree2d(ctx.array(m.leaves, np.int64), gates_of(logits), tuple(m.kernel_size),
                          tuple(m.stride), tuple(m.padding), logits)


@handler(pnn.OrPool2d, builtin=True)
def _or_pool(ctx, name, m, values):
    return ir.OrPool2d(tuple(m.kernel_size), tuple(m.stride), tuple(m.padding))


@handler(pnn.Binarize, builtin=True)
def _binarize(ctx, name, m, values):
    meta = {"straight_through": True} if getattr(m, "straight_through", False) else {}
    return ir.Binarize(ctx.array(m.thresholds), int(m.axis), metadata=meta)


@handler(pnn.GroupSum, builtin=True)
def _group_sum(ctx, name, m, values):
    return ir.GroupSum(int(m.k), float(m.tau), float(m.beta))


@handler(pnn.Activation, builtin=True)
def _activation(ctx, name, m, values):
    return ir.Activation(m.fn, float(m.alpha))


def _full(ctx, param):
    """A per-element parameter broadcast to the value shape (kinds take their shape from it)."""
    a = ctx.array(param)
    try:
        return np.ascontiguousarray(np.broadcast_to(a, ctx.input_shape))
    except ValueError:
        raise ctx.error(f"parameter of shape {a.shape} does not broadcast to the input shape "
                        f"{ctx.input_shape}", field="shape",
                        fix="give it the value's shape (without the batch dim)") from None


@handler(pnn.Scale, builtin=True)
def _scale(ctx, name, m, values):
    return ir.Scale(_full(ctx, m.scale))


@handler(pnn.Threshold, builtin=True)
def _threshold(ctx, name, m, values):
    return ir.Threshold(_full(ctx, m.threshold))


@handler(pnn.Conv1d, pnn.Conv2d, builtin=True)
def _side_padded_conv(ctx, name, m, values):
    """polyir's own Conv (zero padding per side, what to_torch builds)."""
    one = (lambda v: v[0]) if isinstance(m, pnn.Conv1d) else tuple
    bias = ctx.array(m.bias) if m.bias is not None else None
    kind = ir.Conv1d if isinstance(m, pnn.Conv1d) else ir.Conv2d
    spatial = tuple(int(s) for s in ctx.input_shape[1:])
    return kind(input_shape=one(spatial), weight=ctx.array(m.weight), stride=one(m.stride),
                padding=one([b for b, _ in m.pads]), dilation=one(m.dilation),
                groups=int(m.groups), bias=bias, padding_end=one([e for _, e in m.pads]))


@handler(pnn.SumPool2d, builtin=True)
def _sum_pool(ctx, name, m, values):
    return ir.SumPool2d(tuple(m.kernel_size), tuple(m.stride), tuple(m.padding))


def _neuron_time(m, ctx):
    ctx.set_metadata("dt", float(m.dt))
    ctx.set_metadata("discretization", str(getattr(m, "discretization", "euler")))


def _neuron(ctx, name, m, values):
    _neuron_time(m, ctx)
    return m.kind(**{f: _full(ctx, getattr(m, f)) for f in m.FIELDS},
                  **m.options.non_default_options())


for _cls in pnn.LAYERS.values():
    handler(_cls, returns_state=True, builtin=True)(_neuron)


@handler(pnn.Delay, returns_state=True, builtin=True)
def _delay(ctx, name, m, values):
    ctx.set_metadata("dt", float(m.dt))
    steps = ctx.array(m.steps, np.int64)
    delay = (steps * m.dt).astype(ctx.float_dtype)
    return ir.Delay(np.ascontiguousarray(np.broadcast_to(delay, ctx.input_shape)))


@handler(pnn.ChannelAffine, builtin=True)
def _channel_affine(ctx, name, m, values):
    return ir.ChannelAffine(ctx.array(m.weight), ctx.array(m.bias))


@handler(pnn.Clamp, builtin=True)
def _clamp(ctx, name, m, values):
    return ir.Clamp(m.min, m.max)
