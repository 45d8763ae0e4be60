"""NaN and +-inf: every activation on NaN / inf inputs in float32 and float64 (the definitions of
polyir.ir.kinds.ffnn, IEEE arithmetic through the formula: NaN in gives NaN out, gelu(+inf) =
+inf, gelu(-inf) = silu(-inf) = NaN); softplus on both sides of its threshold where the exact
function and torch's differ; NaN / inf in inputs and parameters of linear layers."""
import warnings

import numpy as np

import polyir as P
from golden import case, golden
from golden.cases.ffnn import ACT_REFS, _softplus

SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.5, 1.5, 30.0, -30.0]


def _nonfinite_activation(fn, dtype):
    def make(rng):
        alpha, ref = ACT_REFS[fn]
        node = P.Activation(fn) if alpha is None else P.Activation(fn, alpha)
        g = P.Graph.sequential(P.Scale(np.ones(len(SPECIAL), dtype)), node,
                               input_shape=(len(SPECIAL),))
        x = np.array([SPECIAL, SPECIAL[::-1]], dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # inf - inf, 0 * inf: NaN wanted
            want = ref(x.astype(np.float64), node.alpha)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
        case(f"nonfinite_{fn}_{np.dtype(dtype).name}", g, x, want, **tol)
    make.__name__ = f"nonfinite_{fn}_{np.dtype(dtype).name}"
    return make


for _fn in ACT_REFS:
    for _dt in (np.float32, np.float64):
        golden(_nonfinite_activation(_fn, _dt))


@golden
def softplus_threshold_float64(rng):
    """beta x from 15 to 40: above 20 the result is x itself (torch's definition), which differs
    from log(1 + e^(beta x)) / beta by e^(-beta x) / beta, above float64's resolution near 20."""
    beta = 0.5
    g = P.Graph.sequential(P.Scale(np.ones(6)), P.Activation("softplus", beta), input_shape=(6,))
    x = np.array([[30.0, 39.9, 40.1, 42.0, 50.0, 80.0]])
    want = _softplus(x, beta)
    assert want[0, 2] == x[0, 2] and abs(np.log1p(np.exp(beta * x[0, 2])) / beta - x[0, 2]) > 1e-9
    case("softplus_threshold_float64", g, x, want, rtol=1e-15, atol=0.0)


@golden
def nonfinite_affine(rng):
    """NaN / inf in inputs and in weights: +inf + -inf is NaN (IEEE), exactly as the sums are
    written out here. (A weight of exactly 0 times inf is NaN too, except on heyoka, which folds
    0 * x to 0 when it builds the expression: tests/test_conformance.py shows that apart.)"""
    w = rng.normal(size=(4, 3))
    w[1, 2] = np.inf
    w[2, 0] = np.nan
    b = np.array([0.5, -np.inf, 0.0, 1.0])
    g = P.Graph.sequential(P.Affine(w, b), P.Activation("relu"), input_shape=(3,))
    x = np.array([[1.0, 2.0, 3.0], [np.inf, 0.0, -1.0], [1.0, np.inf, 0.0], [np.nan, 1.0, 1.0],
                  [-np.inf, 0.0, 0.0], [0.0, 0.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y = np.stack([sum(w[:, i] * x[:, i:i + 1] for i in range(3)) + b for _ in [0]])[0]
    case("nonfinite_affine", g, x, np.where(y < 0, 0.0, y), rtol=1e-12, atol=1e-14)


def _rows_with_specials(rng, n, width):
    x = rng.normal(size=(n, width))
    x[0, 1], x[1, 2], x[2, 0], x[3, 3] = np.nan, np.inf, -np.inf, np.nan
    x[3, 0] = np.inf
    return x.astype(np.float32)


@golden
def nonfinite_max_pool2d(rng):
    """NaN wins a max window (torch's max_pool2d), +inf wins, -inf loses to any number."""
    g = P.Graph.sequential(P.MaxPool2d((2, 2), (2, 2)), input_shape=(1, 4, 4))
    x = _rows_with_specials(rng, 4, 16).reshape(4, 1, 4, 4)
    want = np.stack([[[[x[b, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max() for j in range(2)]
                       for i in range(2)]] for b in range(4)])  # numpy's max propagates NaN
    case("nonfinite_max_pool2d", g, x, want, rtol=1e-12, atol=0.0)


@golden
def nonfinite_clamp_binary_softmax(rng):
    """Clamp keeps NaN and bounds +-inf; Binary div gives inf (x / 0) and NaN (0 / 0, inf / inf);
    softmax over a row with NaN or +inf is NaN where IEEE says (exp(inf - inf))."""
    a = _rows_with_specials(rng, 4, 5)
    b = rng.normal(size=(4, 5)).astype(np.float32)
    b[0, 0], b[1, 1], b[2, 2] = 0.0, 0.0, np.inf
    a[1, 1] = 0.0
    a[2, 2] = np.inf
    g = P.Graph()
    g.add("a", P.Input((5,)))
    g.add("b", P.Input((5,)))
    g.add("clamp", P.Clamp(-1.0, 2.0))
    g.add("div", P.Binary("div"))
    g.add("softmax", P.Softmax(-1))
    for out in ("y_clamp", "y_div", "y_softmax"):
        g.add(out, P.Output((5,)))
    for e in [("a", "clamp"), ("clamp", "y_clamp"), ("a", "softmax"), ("softmax", "y_softmax"),
              ("div", "y_div")]:
        g.connect(*e)
    g.connect("a", "div", "input_0")
    g.connect("b", "div", "input_1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        z = a - a.max(-1, keepdims=True)
        soft = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        want = [np.clip(a, -1.0, 2.0), a / b, soft]
    case("nonfinite_clamp_binary_softmax", g, [a, b], want, rtol=1e-5, atol=1e-6)
