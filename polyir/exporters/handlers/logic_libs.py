"""Duck-typed export handlers for difflogic and torchlogix 0.1.1 layers.

Neither library is imported: a module is recognised by its class name and attributes.

difflogic
  LogicLayer: `weights` (out, 16) gate logits (difflogic's gate order is polyir's), `indices` a
  pair (a, b) of index tensors, `in_dim`, `out_dim`; out[j] = G(x[a[j]], x[b[j]]).
  GroupSum: `k`, `tau` (torchlogix's also has `beta`): (group sum + beta) / tau.

torchlogix 0.1.1 (lut_rank 2, the raw 16-logit parametrisation; warp/light and learnable
connections fail naming themselves)
  LogicDense: `weight` (out, 16), `connections.indices` (2, out): a = indices[0], b = indices[1].
    Train mode is softmax(weight / temperature), so the exported logits are weight / temperature.
  LogicConv2d: `tree_weights[level]` (2**(depth-1-level), K, 16) and `connections.indices[0]`
    (2, K, P, S, 3) holding (h, w, channel) in the padded input for every window position P; gate s
    of level 0 reads leaves indices[0][0, k, 0, s] (as a) and indices[0][1, k, 0, s] (as b), and
    gate j of each higher level combines results 2j (a) and 2j+1 (b) of the level below. In
    polyir's LogicTree2d that is leaves[k, 2s + i] = (channel, h, w) of indices[0][i, k, 0, s].
  OrPooling2d: max_pool2d (its -inf padding equals polyir's 0 padding on bits).
  FixedBinarization: x.unsqueeze(-1) > thresholds (broadcast; (C, T) is per channel on images),
    then the T bits are folded into `feature_dim` (counted with batch and the bit dim), element i
    giving bits i*T .. i*T+T-1: polyir's Binarize with axis = feature_dim - 1 (counted without).
"""
from __future__ import annotations

import warnings

import numpy as np

from ... import ir
from ...ir.errors import PolyirWarning
from . import recogniser
from .polyir_nn import gates_of, grad_factor_metadata


def _named(m, name: str, *attrs) -> bool:
    return type(m).__name__ == name and all(hasattr(m, a) for a in attrs)


def _is_tensor(x) -> bool:
    return hasattr(x, "detach") and hasattr(x, "shape")


# --- difflogic -----------------------------------------------------------------------------------
def _is_difflogic_layer(m) -> bool:
    if not _named(m, "LogicLayer", "weights", "indices", "in_dim", "out_dim"):
        return False
    w, idx = m.weights, m.indices
    return (_is_tensor(w) and w.ndim == 2 and w.shape[-1] == 16 and len(idx) == 2
            and all(_is_tensor(i) for i in idx))


@recogniser("difflogic.LogicLayer", _is_difflogic_layer)
def _difflogic_layer(ctx, name, m, values):
    logits = ctx.array(m.weights)
    a, b = (ctx.array(i, np.int64).reshape(-1) for i in m.indices)
    if not (a.shape == b.shape == (int(m.out_dim),) == logits.shape[:1]):
        raise ctx.error(f"indices {a.shape}/{b.shape} and weights {logits.shape} disagree with "
                        f"out_dim={m.out_dim}", field="a", fix="one (a, b) pair per gate")
    return ir.LogicLayer(a, b, gates_of(logits), logits, metadata=grad_factor_metadata(m))


def _is_group_sum(m) -> bool:
    return _named(m, "GroupSum", "k", "tau")


@recogniser("GroupSum (difflogic/torchlogix)", _is_group_sum)
def _group_sum(ctx, name, m, values):
    beta = getattr(m, "beta", 0.0)
    beta = float(beta.item() if _is_tensor(beta) else beta)
    return ir.GroupSum(int(m.k), float(m.tau), beta)


# --- torchlogix ----------------------------------------------------------------------------------
def _raw_logits(m, weight, ctx, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits, gates) of a torchlogix layer in the raw parametrisation; else a clear error."""
    p = getattr(m, "parametrization", None)
    pname = type(p).__name__
    if pname != "RawLUTParametrization":
        raise ctx.error(f"{what} uses the {pname} parametrisation; polyir exports torchlogix's "
                        "raw (16-logit) parametrisation only", field="parametrization",
                        fix="train with parametrization='raw', or register a handler for it "
                            "(@polyir.exporters.handler)")
    if int(getattr(m, "lut_rank", 2)) != 2:
        raise ctx.error(f"{what} has lut_rank={m.lut_rank}; polyir logic kinds are 2-input gates",
                        field="lut_rank", fix="use lut_rank=2")
    raw = ctx.array(weight)
    gates = gates_of(raw)
    temperature = float(getattr(p, "temperature", 1.0))
    logits = raw
    if temperature != 1.0:
        scaled = (raw.astype(np.float64) / temperature).astype(raw.dtype)
        if np.array_equal(gates_of(scaled), gates):
            logits = scaled
        else:  # scaling created a tie: keep the raw logits (eval gates are what must match)
            warnings.warn(f"{ctx.name}: logits kept unscaled by temperature {temperature} (a "
                          "tie would change a gate)", PolyirWarning, stacklevel=2)
    return logits, gates


def _is_logic_dense(m) -> bool:
    return _named(m, "LogicDense", "weight", "connections", "parametrization")


@recogniser("torchlogix.LogicDense", _is_logic_dense)
def _logic_dense(ctx, name, m, values):
    conn = m.connections
    if type(conn).__name__ != "FixedDenseConnections":
        raise ctx.error(f"LogicDense uses {type(conn).__name__}; polyir exports fixed "
                        "connections only", field="connections",
                        fix="train with connections='fixed'")
    logits, gates = _raw_logits(m, m.weight, ctx, "LogicDense")
    idx = ctx.array(conn.indices, np.int64)
    if idx.shape != (2, logits.shape[0]):
        raise ctx.error(f"connections.indices has shape {idx.shape}, expected "
                        f"(2, {logits.shape[0]})", field="a", fix="one (a, b) pair per gate")
    return ir.LogicLayer(idx[0].copy(), idx[1].copy(), gates, logits,
                         metadata=grad_factor_metadata(m))


def _is_logic_conv2d(m) -> bool:
    return _named(m, "LogicConv2d", "tree_weights", "connections", "tree_depth",
                  "receptive_field_size", "stride", "padding", "in_dim")


def _int(v, ctx, field):
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise ctx.error(f"{field}={v} differs per axis; torchlogix applies one value",
                            field=field, fix="use one value")
        v = v[0]
    return int(v)


@recogniser("torchlogix.LogicConv2d", _is_logic_conv2d)
def _logic_conv2d(ctx, name, m, values):
    conn = m.connections
    if type(conn).__name__ != "FixedConvConnections":
        raise ctx.error(f"LogicConv2d uses {type(conn).__name__}; polyir exports fixed "
                        "connections only", field="connections", fix="use connections='fixed'")
    depth = int(m.tree_depth)
    if depth < 1:
        raise ctx.error(f"tree_depth={depth}: LogicTree2d needs at least one gate level",
                        field="leaves", fix="use tree_depth >= 1")
    stride, pad = _int(m.stride, ctx, "stride"), _int(m.padding, ctx, "padding")
    kh, kw = (int(v) for v in m.receptive_field_size)
    spatial = tuple(int(v) for v in ctx.input_shape[1:])
    if tuple(int(v) for v in m.in_dim) != spatial:
        raise ctx.error(f"the layer was built for in_dim={tuple(m.in_dim)}, the input is "
                        f"{spatial}", field="input", fix="feed the input size the layer expects")
    levels, gates = [], []
    for level in range(depth):
        logits, g = _raw_logits(m, m.tree_weights[level], ctx, "LogicConv2d")
        want = (2 ** (depth - 1 - level), None, 16)
        if logits.ndim != 3 or logits.shape[0] != want[0] or logits.shape[2] != 16:
            raise ctx.error(f"tree_weights[{level}] has shape {logits.shape}, expected "
                            f"({want[0]}, K, 16)", field="gates", fix="a torchlogix tree layout")
        levels.append(logits.transpose(1, 0, 2))  # (K, gates at this level, 16)
        gates.append(g.T)
    logits = np.ascontiguousarray(np.concatenate(levels, axis=1))
    gates = np.ascontiguousarray(np.concatenate(gates, axis=1))
    idx = ctx.array(conn.indices[0], np.int64)  # (2, K, P, S, 3): (h, w, c)
    k = logits.shape[0]
    oh = (spatial[0] + 2 * pad - kh) // stride + 1
    ow = (spatial[1] + 2 * pad - kw) // stride + 1
    if idx.shape != (2, k, oh * ow, 2 ** (depth - 1), 3):
        raise ctx.error(f"connections.indices[0] has shape {idx.shape}, expected "
                        f"{(2, k, oh * ow, 2 ** (depth - 1), 3)}", field="leaves",
                        fix="a torchlogix LogicConv2d built for this input size")
    base = idx[:, :, 0]  # window (0, 0): positions inside the receptive field
    oy, ox = np.meshgrid(np.arange(oh) * stride, np.arange(ow) * stride, indexing="ij")
    shift = np.stack([oy.ravel(), ox.ravel(), np.zeros(oh * ow, np.int64)], -1)  # (P, 3)
    if not np.array_equal(idx, base[:, :, None] + shift[None, None, :, None, :]):
        raise ctx.error("connections.indices[0] is not one receptive field slid over the input",
                        field="leaves", fix="use torchlogix's FixedConvConnections unchanged")
    for level in range(1, depth):
        size = 2 ** (depth - level)
        pairs = ctx.array(conn.indices[level], np.int64)
        if not np.array_equal(pairs, np.arange(size).reshape(-1, 2).T):
            raise ctx.error(f"tree level {level} does not pair neighbours (2j, 2j+1)",
                            field="gates", fix="use torchlogix's FixedConvConnections unchanged")
    leaves = np.empty((k, 2 ** depth, 3), np.int64)
    for i in range(2):
        leaves[:, i::2] = base[i][..., [2, 0, 1]]  # (h, w, c) -> (channel, dy, dx)
    if float(getattr(m, "grad_factor", 1.0)) != 1.0:
        warnings.warn(f"{name}: grad_factor={m.grad_factor} is a training setting polyir's "
                      "LogicTree2d does not carry; the imported layer trains with factor 1",
                      PolyirWarning, stacklevel=2)
    return ir.LogicTree2d(leaves, gates.astype(np.uint8), (kh, kw), (stride, stride), (pad, pad),
                          logits)


def _is_or_pooling2d(m) -> bool:
    return _named(m, "OrPooling2d", "kernel_size", "stride", "padding")


def _pair(v):
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


@recogniser("torchlogix.OrPooling2d", _is_or_pooling2d)
def _or_pooling2d(ctx, name, m, values):
    k = _pair(m.kernel_size)
    return ir.OrPool2d(k, _pair(m.stride if m.stride is not None else k), _pair(m.padding))


def _no_kind(what, fix):
    def h(ctx, name, m, values):
        raise ctx.error(f"{what} has no polyir kind", field="type", fix=fix)
    return h


recogniser("torchlogix.LogicConv3d", lambda m: _named(m, "LogicConv3d", "tree_weights"))(
    _no_kind("torchlogix LogicConv3d (3-D logic convolution)", "use LogicConv2d"))
recogniser("torchlogix.OrPooling3d", lambda m: _named(m, "OrPooling3d", "kernel_size"))(
    _no_kind("torchlogix OrPooling3d", "use OrPooling2d"))


_BINARIZATIONS = ("FixedBinarization", "SoftBinarization", "LearnableBinarization")


def _is_binarization(m) -> bool:
    return type(m).__name__ in _BINARIZATIONS and hasattr(m, "thresholds") and hasattr(
        m, "feature_dim")


@recogniser("torchlogix binarization", _is_binarization)
def _binarization(ctx, name, m, values):
    cls_name = type(m).__name__
    th = m.get_thresholds() if cls_name == "LearnableBinarization" else m.thresholds
    if th is None:
        raise ctx.error(f"{cls_name} has no thresholds yet", field="thresholds",
                        fix="fit the thresholds before exporting")
    if cls_name != "FixedBinarization":
        warnings.warn(f"{name}: {cls_name} is exported with its eval-mode (hard) thresholds; "
                      "its train-mode relaxation is not part of polyir's Binarize", PolyirWarning,
                      stacklevel=2)
    th = ctx.array(th)
    shape = tuple(int(s) for s in ctx.input_shape)
    ndim = len(shape) + 2  # batch, *S, bits
    fd = int(m.feature_dim)
    fd = fd + ndim if fd < 0 else fd
    if not 1 <= fd <= ndim - 2:
        raise ctx.error(f"feature_dim={m.feature_dim} folds the bits into the "
                        f"{'batch' if fd == 0 else 'bit'} dim", field="axis",
                        fix="fold into a feature dim")
    t = th.shape[-1]
    if th.ndim == 2 and len(shape) == 3:  # torchlogix's per-channel case on images
        full = np.broadcast_to(th[:, None, None, :], shape + (t,))
    else:
        try:
            full = np.broadcast_to(th, shape + (t,))
        except ValueError:
            raise ctx.error(f"thresholds {th.shape} do not broadcast against the input "
                            f"{shape}", field="thresholds", fix="fix the threshold shape") from None
    axis = fd - 1
    flat = full.reshape(-1, t)
    if (flat == flat[:1]).all():
        out = flat[0].copy()
    else:
        along = np.moveaxis(full, axis, 0).reshape(shape[axis], -1, t)
        if (along == along[:, :1]).all():
            out = along[:, 0].copy()
        else:
            out = np.ascontiguousarray(full)
    return ir.Binarize(out, axis)


@recogniser("torchlogix.DummyBinarization", lambda m: type(m).__name__ == "DummyBinarization")
def _dummy_binarization(ctx, name, m, values):
    return None
