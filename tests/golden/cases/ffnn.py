"""Real-valued kinds: Affine, Linear, Scale, Threshold, Activation (every fn), Flatten, Conv1d,
Conv2d, SumPool2d, AvgPool2d, fan-in sums, several inputs and outputs."""
import math

import numpy as np

import polyir as P
from golden import case, golden

F32 = dict(rtol=1e-5, atol=1e-6)
f32 = np.float32


def _erf(x):
    return np.vectorize(math.erf)(x)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x, beta):
    """x where beta x > 20 (torch's threshold, polyir's definition), else log(1 + e^(beta x)) /
    beta; the exp is evaluated only where it cannot overflow."""
    bx = beta * x
    return np.where(bx > 20, x, np.log1p(np.exp(np.minimum(bx, 20))) / beta)


# fn -> (alpha used here, reference f(x, alpha)) written from the functions' definitions; IEEE
# arithmetic on NaN / inf (relu and hardtanh keep NaN: numpy's where/clip do)
ACT_REFS = {
    "identity": (None, lambda x, a: x),
    "tanh": (None, lambda x, a: np.tanh(x)),
    "sigmoid": (None, lambda x, a: _sigmoid(x)),
    "relu": (None, lambda x, a: np.where(x < 0, 0.0, x)),
    "leaky_relu": (0.2, lambda x, a: np.where(x > 0, x, a * x)),
    "elu": (0.7, lambda x, a: np.where(x > 0, x, a * (np.exp(x) - 1))),
    "softplus": (2.0, _softplus),
    "gelu": (None, lambda x, a: 0.5 * x * (1 + _erf(x / math.sqrt(2)))),
    "silu": (None, lambda x, a: x * _sigmoid(x)),
    "hardtanh": (0.5, lambda x, a: np.clip(x, -a, a)),
    "exp": (None, lambda x, a: np.exp(x)),
}


def conv_ref(x, w, bias, stride, padding, dilation, groups):
    """N-d convolution (cross-correlation, torch's convention) by explicit loops over the
    zero-padded input (the zeros take part: 0 * NaN is NaN). padding per dim: p or (begin, end)."""
    nd = w.ndim - 2
    pads = [(p, p) if np.isscalar(p) else tuple(p) for p in padding]
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + pads)
    out_sp = [(xp.shape[2 + i] - dilation[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1
              for i in range(nd)]
    bsz, cout, cig = x.shape[0], w.shape[0], w.shape[1]
    per_group = cout // groups
    out = np.zeros((bsz, cout, *out_sp))
    for co in range(cout):
        gi = co // per_group
        for pos in np.ndindex(*out_sp):
            acc = np.full(bsz, float(bias[co]))
            for ci in range(cig):
                for kpos in np.ndindex(*w.shape[2:]):
                    idx = tuple(pos[i] * stride[i] + kpos[i] * dilation[i] for i in range(nd))
                    acc += w[(co, ci) + kpos] * xp[(slice(None), gi * cig + ci) + idx]
            out[(slice(None), co) + pos] = acc
    return out


def pool_sum_ref(x, kernel, stride, padding):
    bsz, c, h, w = x.shape
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2])
    oh = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    out = np.zeros((bsz, c, oh, ow))
    for oy in range(oh):
        for ox in range(ow):
            out[:, :, oy, ox] = xp[:, :, oy * stride[0]:oy * stride[0] + kernel[0],
                                   ox * stride[1]:ox * stride[1] + kernel[1]].sum((-1, -2))
    return out


@golden
def affine(rng):
    w, b = rng.normal(size=(5, 7)).astype(f32), rng.normal(size=5).astype(f32)
    g = P.Graph.sequential(P.Affine(w, b))
    x = rng.normal(size=(9, 7)).astype(f32)
    case("affine", g, x, x.astype(np.float64) @ w.T.astype(np.float64) + b, **F32)


@golden
def linear(rng):
    w = rng.normal(size=(3, 6)).astype(f32)
    g = P.Graph.sequential(P.Linear(w))
    x = rng.normal(size=(4, 6)).astype(f32)
    case("linear", g, x, x.astype(np.float64) @ w.T.astype(np.float64), **F32)


@golden
def scale(rng):
    s = rng.normal(size=(2, 3)).astype(f32)
    g = P.Graph.sequential(P.Scale(s))
    x = rng.normal(size=(5, 2, 3)).astype(f32)
    case("scale", g, x, x.astype(np.float64) * s, **F32)


@golden
def threshold(rng):
    t = rng.normal(size=6).astype(f32)
    g = P.Graph.sequential(P.Threshold(t))
    x = rng.normal(size=(8, 6)).astype(f32)
    x[0] = t  # ties give 0 (strict >)
    case("threshold", g, x, (x > t).astype(f32))


def _activation_case(fn):
    def make(rng):
        alpha, ref = ACT_REFS[fn]
        node = P.Activation(fn) if alpha is None else P.Activation(fn, alpha)
        g = P.Graph.sequential(node, input_shape=(11,))
        x = np.linspace(-3, 3, 11 * 4).reshape(4, 11).astype(f32)
        x[0, 0] = 0.0
        a = node.alpha
        case(f"activation_{fn}", g, x, ref(x.astype(np.float64), a), **F32)
    make.__name__ = f"activation_{fn}"
    return make


for _fn in ACT_REFS:
    golden(_activation_case(_fn))


@golden
def mlp_float64(rng):
    w1, b1 = rng.normal(size=(16, 4)), rng.normal(size=16)
    w2, b2 = rng.normal(size=(16, 16)), rng.normal(size=16)
    w3, b3 = rng.normal(size=(1, 16)), rng.normal(size=1)
    g = P.Graph.sequential(P.Affine(w1, b1), P.Activation("tanh"), P.Affine(w2, b2),
                           P.Activation("silu"), P.Affine(w3, b3))
    x = rng.normal(size=(50, 4))
    h = np.tanh(x @ w1.T + b1)
    h = h @ w2.T + b2
    h = h * _sigmoid(h)
    case("mlp_float64", g, x, h @ w3.T + b3, rtol=1e-12, atol=1e-12)


@golden
def flatten_middle_dims(rng):
    g = P.Graph.sequential(P.Flatten(start_dim=1, end_dim=2), input_shape=(2, 3, 4))
    x = rng.normal(size=(3, 2, 3, 4)).astype(f32)
    case("flatten_middle_dims", g, x, x.reshape(3, 2, 12))


@golden
def flatten_all(rng):
    g = P.Graph.sequential(P.Flatten(start_dim=0), input_shape=(2, 3, 4))
    x = rng.normal(size=(3, 2, 3, 4)).astype(f32)
    case("flatten_all", g, x, x.reshape(3, 24))


@golden
def conv1d_strided_dilated_grouped(rng):
    w = rng.normal(size=(4, 3, 3)).astype(f32)  # C_out 4, C_in 6 in 2 groups
    b = rng.normal(size=4).astype(f32)
    g = P.Graph.sequential(P.Conv1d(None, w, stride=2, padding=1, dilation=2, groups=2, bias=b),
                           input_shape=(6, 11))
    x = rng.normal(size=(3, 6, 11)).astype(f32)
    case("conv1d_strided_dilated_grouped", g, x, conv_ref(x, w, b, (2,), (1,), (2,), 2), **F32)


@golden
def conv1d_same(rng):
    w = rng.normal(size=(2, 2, 3)).astype(f32)
    b = np.zeros(2, f32)
    g = P.Graph.sequential(P.Conv1d(9, w, padding="same", dilation=2, bias=b))
    x = rng.normal(size=(4, 2, 9)).astype(f32)
    case("conv1d_same", g, x, conv_ref(x, w, b, (1,), (2,), (2,), 1), **F32)


@golden
def conv2d_strided_padded(rng):
    w = rng.normal(size=(3, 2, 3, 2)).astype(f32)
    b = rng.normal(size=3).astype(f32)
    g = P.Graph.sequential(P.Conv2d(None, w, (2, 1), (1, 0), (1, 1), 1, b), input_shape=(2, 7, 6))
    x = rng.normal(size=(2, 2, 7, 6)).astype(f32)
    case("conv2d_strided_padded", g, x, conv_ref(x, w, b, (2, 1), (1, 0), (1, 1), 1), **F32)


@golden
def conv2d_grouped_dilated(rng):
    w = rng.normal(size=(4, 1, 2, 2)).astype(f32)  # depthwise-ish: 4 groups of 1 channel
    b = rng.normal(size=4).astype(f32)
    g = P.Graph.sequential(P.Conv2d((6, 6), w, (1, 1), (0, 0), (2, 2), 4, b))
    x = rng.normal(size=(3, 4, 6, 6)).astype(f32)
    case("conv2d_grouped_dilated", g, x, conv_ref(x, w, b, (1, 1), (0, 0), (2, 2), 4), **F32)


@golden
def sumpool2d_padded(rng):
    g = P.Graph.sequential(P.SumPool2d((3, 3), (2, 2), (1, 1)), input_shape=(2, 7, 6))
    x = rng.normal(size=(3, 2, 7, 6)).astype(f32)
    case("sumpool2d_padded", g, x, pool_sum_ref(x, (3, 3), (2, 2), (1, 1)), **F32)


@golden
def avgpool2d_padded(rng):
    # zero padding counts in the mean (torch's default count_include_pad=True)
    g = P.Graph.sequential(P.AvgPool2d((2, 2), (2, 2), (1, 1)), input_shape=(2, 5, 6))
    x = rng.normal(size=(3, 2, 5, 6)).astype(f32)
    case("avgpool2d_padded", g, x, pool_sum_ref(x, (2, 2), (2, 2), (1, 1)) / 4, **F32)


@golden
def cnn_chain(rng):
    w = rng.normal(size=(4, 1, 3, 3)).astype(f32)
    b = rng.normal(size=4).astype(f32)
    wf, bf = rng.normal(size=(3, 64)).astype(f32), rng.normal(size=3).astype(f32)
    g = P.Graph.sequential(P.Conv2d(None, w, 1, 1, 1, 1, b), P.Activation("relu"),
                           P.AvgPool2d((2, 2), (2, 2)), P.Flatten(start_dim=0), P.Affine(wf, bf),
                           input_shape=(1, 8, 8))
    x = rng.normal(size=(5, 1, 8, 8)).astype(f32)
    h = np.maximum(conv_ref(x, w, b, (1, 1), (1, 1), (1, 1), 1), 0)
    h = pool_sum_ref(h, (2, 2), (2, 2), (0, 0)) / 4
    case("cnn_chain", g, x, h.reshape(5, -1) @ wf.T.astype(np.float64) + bf, rtol=1e-4, atol=1e-5)


@golden
def fan_in_sum(rng):
    wa, ba = rng.normal(size=(4, 3)).astype(f32), rng.normal(size=4).astype(f32)
    wb = rng.normal(size=(4, 3)).astype(f32)
    g = P.Graph()
    g.add("x", P.Input((3,)))
    g.add("a", P.Affine(wa, ba))
    g.add("b", P.Linear(wb))
    g.add("act", P.Activation("tanh"))
    g.add("y", P.Output((4,)))
    for e in [("x", "a"), ("x", "b"), ("a", "act"), ("b", "act"), ("act", "y")]:
        g.connect(*e)
    x = rng.normal(size=(6, 3)).astype(f32)
    x64 = x.astype(np.float64)
    case("fan_in_sum", g, x, np.tanh(x64 @ wa.T + ba + x64 @ wb.T), **F32)


@golden
def two_inputs_two_outputs(rng):
    w1, b1 = rng.normal(size=(4, 3)).astype(f32), rng.normal(size=4).astype(f32)
    w2 = rng.normal(size=(4, 2)).astype(f32)
    g = P.Graph()
    g.add("x1", P.Input((3,)))
    g.add("x2", P.Input((2,)))
    g.add("aff", P.Affine(w1, b1))
    g.add("lin", P.Linear(w2))
    g.add("relu", P.Activation("relu"))
    g.add("out_relu", P.Output((4,)))
    g.add("out_aff", P.Output((4,)))
    for e in [("x1", "aff"), ("x2", "lin"), ("aff", "relu"), ("lin", "relu"), ("relu", "out_relu"),
              ("aff", "out_aff")]:
        g.connect(*e)
    x1 = rng.normal(size=(5, 3)).astype(f32)
    x2 = rng.normal(size=(5, 2)).astype(f32)
    a = x1.astype(np.float64) @ w1.T + b1
    case("two_inputs_two_outputs", g, [x1, x2],
         [np.maximum(a + x2.astype(np.float64) @ w2.T, 0), a], **F32)


def _same_pads(kernel, dilation):
    """torch's padding='same' (stride 1): total d (k - 1) per dim, the odd one at the end."""
    return [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation)]


@golden
def conv2d_padding_modes(rng):
    """One weight under every way to give padding: 'valid', 'same' with an even kernel (torch
    puts the extra zero at the end), one int, per dim, and per side with a stride."""
    w = rng.normal(size=(2, 3, 4, 3)).astype(f32)
    b = rng.normal(size=2).astype(f32)
    x = rng.normal(size=(3, 3, 7, 6)).astype(f32)
    modes = {
        "valid": (dict(padding="valid"), (1, 1), [0, 0]),
        "same": (dict(padding="same"), (1, 1), _same_pads((4, 3), (1, 1))),
        "int": (dict(padding=2), (1, 1), [2, 2]),
        "per_dim": (dict(padding=(1, 0)), (1, 1), [1, 0]),
        "per_side": (dict(padding=(0, 2), padding_end=(3, 1), stride=(2, 3)), (2, 3),
                     [(0, 3), (2, 1)]),
    }
    for mode, (kw, stride, pads) in modes.items():
        g = P.Graph.sequential(P.Conv2d(None, w, bias=b, **kw), input_shape=(3, 7, 6))
        refused = {"nir": "padding_end"} if g.nodes["conv2d"].padding_end is not None else {}
        case(f"conv2d_padding_{mode}", g, x, conv_ref(x, w, b, stride, pads, (1, 1), 1),
             refused=refused, **F32)


@golden
def conv1d_padding_per_side(rng):
    w = rng.normal(size=(3, 2, 4)).astype(f32)
    b = rng.normal(size=3).astype(f32)
    g = P.Graph.sequential(P.Conv1d(None, w, stride=1, padding=0, dilation=2, bias=b,
                                    padding_end=5), input_shape=(2, 9))
    x = rng.normal(size=(4, 2, 9)).astype(f32)
    case("conv1d_padding_per_side", g, x, conv_ref(x, w, b, (1,), [(0, 5)], (2,), 1),
         refused={"nir": "padding_end"}, **F32)


@golden
def conv1d_same_even_kernel(rng):
    w = rng.normal(size=(2, 2, 4)).astype(f32)
    b = rng.normal(size=2).astype(f32)
    g = P.Graph.sequential(P.Conv1d(None, w, padding="same", bias=b), input_shape=(2, 8))
    x = rng.normal(size=(3, 2, 8)).astype(f32)
    case("conv1d_same_even_kernel", g, x, conv_ref(x, w, b, (1,), _same_pads((4,), (1,)), (1,), 1),
         refused={"nir": "padding_end"}, **F32)


@golden
def cnn_nonfinite(rng):
    """NaN / inf in the input and in conv weights through Conv2d (padded) -> relu -> AvgPool2d:
    the padded zeros meet the NaN / inf weights (0 * inf is NaN), relu keeps NaN, the pool sums
    +inf and -inf to NaN."""
    w = rng.normal(size=(3, 1, 3, 3)).astype(f32)
    w[1, 0, 2, 1] = np.inf
    w[2, 0, 0, 0] = np.nan
    b = rng.normal(size=3).astype(f32)
    g = P.Graph.sequential(P.Conv2d(None, w, 1, 1, 1, 1, b), P.Activation("relu"),
                           P.AvgPool2d((2, 2), (2, 2)), input_shape=(1, 6, 6))
    x = rng.normal(size=(4, 1, 6, 6)).astype(f32)
    x[1, 0, 3, 3], x[2, 0, 0, 5], x[3, 0, 2, 2] = np.inf, np.nan, -np.inf
    with np.errstate(invalid="ignore"):
        h = conv_ref(x, w, b, (1, 1), (1, 1), (1, 1), 1)
        h = np.where(h < 0, 0.0, h)
        y = pool_sum_ref(h, (2, 2), (2, 2), (0, 0)) / 4
    assert np.isnan(y).any() and np.isfinite(y).any() and np.isinf(y).any()
    case("cnn_nonfinite", g, x, y, rtol=1e-4, atol=1e-5)
