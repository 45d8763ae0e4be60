"""Everyday CNN / MLP kinds: ChannelAffine, MaxPool1d/2d, AdaptiveAvgPool2d, Concat (join and
stack), Binary (mul, div), Clamp, Softmax / log-softmax, LayerNorm, and a conv without bias. The
references are numpy written here from the layers' textbook definitions."""
import math

import numpy as np

import polyir as P
from golden import case, golden

F32 = dict(rtol=1e-5, atol=1e-6)
f32 = np.float32


def _two_inputs(kind, shapes, out_shape):
    g = P.Graph()
    for i, s in enumerate(shapes):
        g.add(f"x{i}", P.Input(s))
    g.add("node", kind)
    for i in range(len(shapes)):
        g.connect(f"x{i}", "node", f"input_{i}")
    g.add("output", P.Output(out_shape))
    g.connect("node", "output")
    return g


@golden
def channel_affine(rng):
    w, b = rng.normal(size=3).astype(f32), rng.normal(size=3).astype(f32)
    g = P.Graph.sequential(P.ChannelAffine(w, b), input_shape=(3, 2, 4))
    x = rng.normal(size=(5, 3, 2, 4)).astype(f32)
    want = x.astype(np.float64) * w[None, :, None, None] + b[None, :, None, None]
    case("channel_affine", g, x, want, **F32)


@golden
def channel_affine_features(rng):
    w, b = rng.normal(size=5).astype(f32), rng.normal(size=5).astype(f32)
    g = P.Graph.sequential(P.ChannelAffine(w, b), input_shape=(5,))
    x = rng.normal(size=(4, 5)).astype(f32)
    case("channel_affine_features", g, x, x.astype(np.float64) * w + b, **F32)


def _max_pool_ref(x, kernel, stride, padding):
    """Max over windows of the -inf padded input."""
    nd = len(kernel)
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(p, p) for p in padding],
                constant_values=-np.inf)
    out_sp = [(x.shape[2 + i] + 2 * padding[i] - kernel[i]) // stride[i] + 1 for i in range(nd)]
    out = np.empty(x.shape[:2] + tuple(out_sp))
    for pos in np.ndindex(*out_sp):
        window = tuple(slice(pos[i] * stride[i], pos[i] * stride[i] + kernel[i])
                       for i in range(nd))
        out[(slice(None), slice(None)) + pos] = xp[(slice(None), slice(None)) + window].max(
            axis=tuple(range(2, 2 + nd)))
    return out


@golden
def max_pool2d(rng):
    g = P.Graph.sequential(P.MaxPool2d((3, 2), (2, 1), (1, 1)), input_shape=(2, 7, 5))
    x = -np.abs(rng.normal(size=(4, 2, 7, 5))).astype(f32)  # negative: the padding must not win
    case("max_pool2d", g, x, _max_pool_ref(x, (3, 2), (2, 1), (1, 1)), **F32)


@golden
def max_pool1d(rng):
    g = P.Graph.sequential(P.MaxPool1d(3, 2, 1), input_shape=(3, 8))
    x = rng.normal(size=(4, 3, 8)).astype(f32)
    case("max_pool1d", g, x, _max_pool_ref(x, (3,), (2,), (1,)), **F32)


@golden
def adaptive_avg_pool2d(rng):
    g = P.Graph.sequential(P.AdaptiveAvgPool2d((2, 3)), input_shape=(2, 5, 7))
    x = rng.normal(size=(3, 2, 5, 7)).astype(f32)
    want = np.empty((3, 2, 2, 3))
    for i in range(2):  # window i of n_out over n_in: [floor(i n / o), ceil((i + 1) n / o))
        y0, y1 = math.floor(i * 5 / 2), math.ceil((i + 1) * 5 / 2)
        for j in range(3):
            x0, x1 = math.floor(j * 7 / 3), math.ceil((j + 1) * 7 / 3)
            want[:, :, i, j] = x[:, :, y0:y1, x0:x1].astype(np.float64).mean((-1, -2))
    case("adaptive_avg_pool2d", g, x, want, **F32)


@golden
def global_avg_pool(rng):
    g = P.Graph.sequential(P.AdaptiveAvgPool2d((1, 1)), P.Flatten(start_dim=0),
                           input_shape=(4, 3, 3))
    x = rng.normal(size=(2, 4, 3, 3)).astype(f32)
    case("global_avg_pool", g, x, x.astype(np.float64).mean((2, 3)), **F32)


@golden
def concat_channels(rng):
    g = _two_inputs(P.Concat(2, axis=0), [(2, 3), (1, 3)], (3, 3))
    a, b = rng.normal(size=(4, 2, 3)).astype(f32), rng.normal(size=(4, 1, 3)).astype(f32)
    case("concat_channels", g, [a, b], np.concatenate([a, b], axis=1))


@golden
def concat_last_axis(rng):
    g = _two_inputs(P.Concat(2, axis=-1), [(2, 3), (2, 1)], (2, 4))
    a, b = rng.normal(size=(4, 2, 3)).astype(f32), rng.normal(size=(4, 2, 1)).astype(f32)
    case("concat_last_axis", g, [a, b], np.concatenate([a, b], axis=2))


@golden
def stack_features(rng):
    g = _two_inputs(P.Concat(2, axis=1, stack=True), [(2, 3), (2, 3)], (2, 2, 3))
    a, b = rng.normal(size=(4, 2, 3)).astype(f32), rng.normal(size=(4, 2, 3)).astype(f32)
    case("stack_features", g, [a, b], np.stack([a, b], axis=2))


@golden
def binary_mul(rng):
    g = _two_inputs(P.Binary("mul"), [(2, 3), (2, 3)], (2, 3))
    a, b = rng.normal(size=(5, 2, 3)).astype(f32), rng.normal(size=(5, 2, 3)).astype(f32)
    case("binary_mul", g, [a, b], a.astype(np.float64) * b, **F32)


@golden
def binary_div(rng):
    g = _two_inputs(P.Binary("div"), [(4,), (4,)], (4,))
    a = rng.normal(size=(5, 4)).astype(f32)
    b = (rng.uniform(0.5, 2, size=(5, 4)) * rng.choice([-1, 1], size=(5, 4))).astype(f32)
    case("binary_div", g, [a, b], a.astype(np.float64) / b, **F32)


@golden
def clamp_bounds(rng):
    g = P.Graph()
    g.add("x", P.Input((12,)))
    for name, lo, hi in (("relu6", 0.0, 6.0), ("asym", -0.5, 2.0), ("above", -1.0, math.inf)):
        g.add(name, P.Clamp(lo, hi))
        g.add(f"y_{name}", P.Output((12,)))
        g.connect("x", name)
        g.connect(name, f"y_{name}")
    x = np.linspace(-8, 8, 36).reshape(3, 12).astype(f32)
    case("clamp_bounds", g, x, [np.clip(x, 0, 6), np.clip(x, -0.5, 2), np.maximum(x, -1)])


def _softmax_ref(x, axis, log):
    x = x.astype(np.float64)
    z = x - x.max(axis=axis, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return z - lse if log else np.exp(z - lse)


@golden
def softmax_features(rng):
    g = P.Graph.sequential(P.Softmax(-1), input_shape=(7,))
    x = (3 * rng.normal(size=(6, 7))).astype(f32)
    case("softmax_features", g, x, _softmax_ref(x, 1, False), **F32)


@golden
def log_softmax_channels(rng):
    g = P.Graph.sequential(P.Softmax(0, log=True), input_shape=(4, 2, 3))
    x = (3 * rng.normal(size=(3, 4, 2, 3))).astype(f32)
    case("log_softmax_channels", g, x, _softmax_ref(x, 1, True), **F32)


def _layer_norm_ref(x, ndim, weight, bias, eps):
    axes = tuple(range(x.ndim - ndim, x.ndim))
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)  # biased, as torch
    y = (x - mean) / np.sqrt(var + eps)
    return y * (1 if weight is None else weight) + (0 if bias is None else bias)


@golden
def layer_norm_affine(rng):
    w, b = rng.normal(size=(2, 3)).astype(f32), rng.normal(size=(2, 3)).astype(f32)
    g = P.Graph.sequential(P.LayerNorm((2, 3), w, b, 1e-3), input_shape=(4, 2, 3))
    x = rng.normal(size=(5, 4, 2, 3)).astype(f32)
    case("layer_norm_affine", g, x, _layer_norm_ref(x, 2, w, b, 1e-3), **F32)


@golden
def layer_norm_plain(rng):
    g = P.Graph.sequential(P.LayerNorm((6,)), input_shape=(6,))
    x = (2 + rng.normal(size=(5, 6))).astype(f32)
    case("layer_norm_plain", g, x, _layer_norm_ref(x, 1, None, None, 1e-5), **F32)


@golden
def conv2d_without_bias(rng):
    w = rng.normal(size=(2, 3, 2, 2)).astype(f32)
    g = P.Graph.sequential(P.Conv2d(None, w, padding=1), input_shape=(3, 4, 4))
    x = rng.normal(size=(2, 3, 4, 4)).astype(f32)
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (1, 1), (1, 1)])
    want = np.zeros((2, 2, 5, 5))
    for i in range(5):
        for j in range(5):
            want[:, :, i, j] = np.einsum("bchw,ochw->bo", xp[:, :, i:i + 2, j:j + 2], w)
    case("conv2d_without_bias", g, x, want, **F32)
