"""Logic kinds: LogicLayer, LogicTree2d, OrPool2d, Binarize, and logic nets. All exact in eval
mode.

The references below are written from the gate names (difflogic's order), not from polyir's tables.
Train mode (the `relaxed` references) evaluates each gate as the softmax mixture of the 16
real-valued gates (AND = ab, OR = a + b - ab, XOR = a + b - 2ab, NOT a = 1 - a); a graph without
stored logits starts from HARD_LOGIT at the chosen gate and 0 elsewhere (polyir.nn's documented
convention for imported hard gates).
"""
import numpy as np

import polyir as P
from golden import case, golden

# difflogic's gate order, each gate written out on 0/1 integers.
GATES = [
    lambda a, b: 0 * a,                # 0  FALSE
    lambda a, b: a & b,                # 1  AND
    lambda a, b: a & (1 - b),          # 2  A AND NOT B
    lambda a, b: a,                    # 3  A
    lambda a, b: (1 - a) & b,          # 4  NOT A AND B
    lambda a, b: b,                    # 5  B
    lambda a, b: a ^ b,                # 6  XOR
    lambda a, b: a | b,                # 7  OR
    lambda a, b: 1 - (a | b),          # 8  NOR
    lambda a, b: 1 - (a ^ b),          # 9  XNOR
    lambda a, b: 1 - b,                # 10 NOT B
    lambda a, b: a | (1 - b),          # 11 A OR NOT B
    lambda a, b: 1 - a,                # 12 NOT A
    lambda a, b: (1 - a) | b,          # 13 NOT A OR B
    lambda a, b: 1 - (a & b),          # 14 NAND
    lambda a, b: 1 + 0 * a,            # 15 TRUE
]


# The same gates relaxed to [0, 1] values (products for AND, inclusion-exclusion for OR).
RELAXED = [
    lambda a, b: 0 * a,                # 0  FALSE
    lambda a, b: a * b,                # 1  AND
    lambda a, b: a - a * b,            # 2  A AND NOT B
    lambda a, b: a,                    # 3  A
    lambda a, b: b - a * b,            # 4  NOT A AND B
    lambda a, b: b,                    # 5  B
    lambda a, b: a + b - 2 * a * b,    # 6  XOR
    lambda a, b: a + b - a * b,        # 7  OR
    lambda a, b: 1 - (a + b - a * b),  # 8  NOR
    lambda a, b: 1 - (a + b - 2 * a * b),  # 9  XNOR
    lambda a, b: 1 - b,                # 10 NOT B
    lambda a, b: 1 - b + a * b,        # 11 A OR NOT B
    lambda a, b: 1 - a,                # 12 NOT A
    lambda a, b: 1 - a + a * b,        # 13 NOT A OR B
    lambda a, b: 1 - a * b,            # 14 NAND
    lambda a, b: 1 + 0 * a,            # 15 TRUE
]
HARD_LOGIT = 10.0


def gate_probs(gates, logits=None):
    """(..., 16) softmax of the logits (or of HARD_LOGIT one-hot rows when none are stored)."""
    if logits is None:
        logits = np.eye(16)[np.asarray(gates)] * HARD_LOGIT
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def mix(p, a, b):
    """Relaxed gate: sum_g p[g] * RELAXED[g](a, b), p (16,) or broadcasting (..., 16)."""
    return sum(p[..., g] * RELAXED[g](a, b) for g in range(16))


def layer_relaxed(x, a, b, gates, logits=None):
    x = np.asarray(x, np.float64)
    return mix(gate_probs(gates, logits), x[:, a], x[:, b])


def gate_ref(g, a, b):
    """Gate ids g (n,) applied columnwise to integer bit arrays a, b (batch, n)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), np.int64)
    for j, gj in enumerate(np.broadcast_to(g, out.shape[-1:])):
        out[..., j] = GATES[int(gj)](a[..., j], b[..., j])
    return out


def layer_ref(x, a, b, g):
    x = np.asarray(x, np.int64)
    return gate_ref(g, x[:, a], x[:, b])


def tree_ref(x, leaves, gates, kernel, stride, padding, relaxed=False):
    """Eval mode on integer bits; relaxed=True: the train-mode mixture on floats."""
    x = np.asarray(x, np.float64 if relaxed else np.int64)
    probs = gate_probs(gates) if relaxed else None
    bsz, _, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.zeros((bsz, x.shape[1], h + 2 * ph, w + 2 * pw), x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((bsz, len(leaves), oh, ow), x.dtype)
    for k in range(len(leaves)):
        for oy in range(oh):
            for ox in range(ow):
                vals = [xp[:, c, oy * sh + dy, ox * sw + dx] for c, dy, dx in leaves[k]]
                gi = 0
                while len(vals) > 1:
                    nxt = []
                    for i in range(len(vals) // 2):
                        u, v = vals[2 * i], vals[2 * i + 1]
                        nxt.append(mix(probs[k, gi], u, v) if relaxed
                                   else GATES[int(gates[k, gi])](u, v))
                        gi += 1
                    vals = nxt
                out[:, k, oy, ox] = vals[0]
    return out


def orpool_ref(x, kernel, stride, padding):
    bsz, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.zeros((bsz, c, h + 2 * ph, w + 2 * pw), x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((bsz, c, oh, ow), x.dtype)
    for oy in range(oh):
        for ox in range(ow):
            win = xp[:, :, oy * sh:oy * sh + kh, ox * sw:ox * sw + kw]
            out[:, :, oy, ox] = win.reshape(bsz, c, -1).max(-1)
    return out


def bits(rng, shape):
    return rng.integers(0, 2, shape).astype(np.float32)


def random_tree(rng, channels, kernels, depth, kernel):
    n = 2 ** depth
    leaves = np.stack([rng.integers(0, channels, (kernels, n)), rng.integers(0, kernel[0], (kernels, n)),
                       rng.integers(0, kernel[1], (kernels, n))], -1)
    return leaves, rng.integers(0, 16, (kernels, n - 1))


@golden
def logic_all_gates_all_pairs(rng):
    g = P.Graph.sequential(P.LogicLayer(np.zeros(16, int), np.ones(16, int), np.arange(16)),
                           input_shape=(2,), input_elem="bit")
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    # The truth table of each gate read off its name, rows (a, b) = 00, 01, 10, 11.
    table = np.array([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 1, 1], [0, 1, 0, 0],
                      [0, 1, 0, 1], [0, 1, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 1],
                      [1, 0, 1, 0], [1, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 1], [1, 1, 1, 0],
                      [1, 1, 1, 1]]).T
    assert np.array_equal(layer_ref(x, np.zeros(16, int), np.ones(16, int), np.arange(16)), table)
    case("logic_all_gates_all_pairs", g, x, table.astype(np.float32),
         relaxed=layer_relaxed(x, np.zeros(16, int), np.ones(16, int), np.arange(16)))


@golden
def logic_random_1k(rng):
    n_in, n = 64, 1000
    a, b, gate = rng.integers(0, n_in, n), rng.integers(0, n_in, n), rng.integers(0, 16, n)
    g = P.Graph.sequential(P.LogicLayer(a, b, gate), input_shape=(n_in,), input_elem="bit")
    x = bits(rng, (257, n_in))
    case("logic_random_1k", g, x, layer_ref(x, a, b, gate).astype(np.float32),
         relaxed=layer_relaxed(x, a, b, gate))


@golden
def logic_random_with_logits(rng):
    n_in, n = 20, 100
    logits = rng.normal(size=(n, 16)).astype(np.float32)
    gate = logits.argmax(-1)
    a, b = rng.integers(0, n_in, n), rng.integers(0, n_in, n)
    g = P.Graph.sequential(P.LogicLayer(a, b, gate, logits), input_shape=(n_in,), input_elem="bit")
    x = bits(rng, (65, n_in))
    case("logic_random_with_logits", g, x, layer_ref(x, a, b, gate).astype(np.float32),
         relaxed=layer_relaxed(x, a, b, gate, logits.astype(np.float64)))


@golden
def logic_batch_of_one(rng):
    a, b, gate = rng.integers(0, 8, 30), rng.integers(0, 8, 30), rng.integers(0, 16, 30)
    g = P.Graph.sequential(P.LogicLayer(a, b, gate), input_shape=(8,), input_elem="bit")
    x = bits(rng, (1, 8))
    case("logic_batch_of_one", g, x, layer_ref(x, a, b, gate).astype(np.float32),
         relaxed=layer_relaxed(x, a, b, gate))


@golden
def logic_net_binarize_layers_groupsum(rng):
    th = np.array([-0.5, 0.0, 0.5], np.float32)
    l1 = (rng.integers(0, 18, 60), rng.integers(0, 18, 60), rng.integers(0, 16, 60))
    l2 = (rng.integers(0, 60, 40), rng.integers(0, 60, 40), rng.integers(0, 16, 40))
    l3 = (rng.integers(0, 40, 20), rng.integers(0, 40, 20), rng.integers(0, 16, 20))
    g = P.Graph.sequential(P.Binarize(th), P.LogicLayer(*l1), P.LogicLayer(*l2),
                           P.LogicLayer(*l3), P.GroupSum(4, tau=1.0), input_shape=(6,))
    x = rng.normal(size=(100, 6)).astype(np.float32)
    x[0, :3] = th  # equal to a threshold: strict x > t gives 0
    enc = (x[:, :, None] > th[None, None, :]).reshape(100, 18).astype(np.int64)
    h = layer_ref(layer_ref(layer_ref(enc, *l1), *l2), *l3)
    soft = layer_relaxed(layer_relaxed(layer_relaxed(enc, *l1), *l2), *l3)
    case("logic_net_binarize_layers_groupsum", g, x,
         h.reshape(100, 4, 5).sum(-1).astype(np.float32),
         relaxed=soft.reshape(100, 4, 5).sum(-1))


@golden
def logic_tree2d_padded_strided(rng):
    kernel, stride, padding = (3, 2), (2, 1), (1, 1)
    leaves, gates = random_tree(rng, 3, 4, 3, kernel)
    g = P.Graph.sequential(P.LogicTree2d(leaves, gates, kernel, stride, padding),
                           input_shape=(3, 7, 6), input_elem="bit")
    x = bits(rng, (9, 3, 7, 6))
    case("logic_tree2d_padded_strided", g, x,
         tree_ref(x, leaves, gates, kernel, stride, padding).astype(np.float32),
         relaxed=tree_ref(x, leaves, gates, kernel, stride, padding, relaxed=True))


@golden
def logic_tree2d_depth1(rng):
    leaves, gates = random_tree(rng, 2, 5, 1, (2, 2))
    g = P.Graph.sequential(P.LogicTree2d(leaves, gates, (2, 2)), input_shape=(2, 5, 5),
                           input_elem="bit")
    x = bits(rng, (4, 2, 5, 5))
    case("logic_tree2d_depth1", g, x,
         tree_ref(x, leaves, gates, (2, 2), (1, 1), (0, 0)).astype(np.float32),
         relaxed=tree_ref(x, leaves, gates, (2, 2), (1, 1), (0, 0), relaxed=True))


@golden
def orpool2d_padded(rng):
    g = P.Graph.sequential(P.OrPool2d((3, 3), (2, 2), (1, 1)), input_shape=(2, 7, 8),
                           input_elem="bit")
    x = (rng.random((5, 2, 7, 8)) < 0.15).astype(np.float32)
    case("orpool2d_padded", g, x, orpool_ref(x, (3, 3), (2, 2), (1, 1)))


@golden
def orpool2d_plain(rng):
    g = P.Graph.sequential(P.OrPool2d((2, 2), (2, 2)), input_shape=(3, 6, 6), input_elem="bit")
    x = (rng.random((4, 3, 6, 6)) < 0.3).astype(np.float32)
    case("orpool2d_plain", g, x, orpool_ref(x, (2, 2), (2, 2), (0, 0)))


@golden
def logic_conv_net(rng):
    leaves, gates = random_tree(rng, 2, 4, 2, (3, 3))
    a, b, gate = rng.integers(0, 36, 10), rng.integers(0, 36, 10), rng.integers(0, 16, 10)
    g = P.Graph.sequential(P.LogicTree2d(leaves, gates, (3, 3)), P.OrPool2d((2, 2), (2, 2)),
                           P.Flatten(start_dim=0), P.LogicLayer(a, b, gate), P.GroupSum(2),
                           input_shape=(2, 8, 8), input_elem="bit")
    x = bits(rng, (6, 2, 8, 8))
    h = orpool_ref(tree_ref(x, leaves, gates, (3, 3), (1, 1), (0, 0)), (2, 2), (2, 2), (0, 0))
    y = layer_ref(h.reshape(6, -1), a, b, gate).reshape(6, 2, 5).sum(-1)
    soft = orpool_ref(tree_ref(x, leaves, gates, (3, 3), (1, 1), (0, 0), relaxed=True), (2, 2),
                      (2, 2), (0, 0))
    soft = layer_relaxed(soft.reshape(6, -1), a, b, gate).reshape(6, 2, 5).sum(-1)
    case("logic_conv_net", g, x, y.astype(np.float32), relaxed=soft)


@golden
def binarize_shared(rng):
    th = np.array([0.2, 0.4, 0.6, 0.8], np.float32)
    g = P.Graph.sequential(P.Binarize(th), input_shape=(5,))
    x = rng.random((7, 5)).astype(np.float32)
    x[0, 0], x[1, 1] = 0.4, 0.8  # ties read 0
    expected = np.zeros((7, 20), np.float32)
    for i in range(5):
        for t in range(4):
            expected[:, i * 4 + t] = x[:, i] > th[t]
    case("binarize_shared", g, x, expected)


@golden
def binarize_per_axis_index(rng):
    th = np.sort(rng.normal(size=(4, 3)), -1).astype(np.float32)  # (S[axis]=4, T=3)
    g = P.Graph.sequential(P.Binarize(th, axis=1), input_shape=(2, 4))
    x = rng.normal(size=(6, 2, 4)).astype(np.float32)
    expected = np.zeros((6, 2, 12), np.float32)
    for r in range(2):
        for i in range(4):
            for t in range(3):
                expected[:, r, i * 3 + t] = x[:, r, i] > th[i, t]
    case("binarize_per_axis_index", g, x, expected)


@golden
def binarize_per_element(rng):
    th = rng.normal(size=(2, 3, 2)).astype(np.float32)  # (*S, T)
    g = P.Graph.sequential(P.Binarize(th, axis=0), input_shape=(2, 3))
    x = rng.normal(size=(5, 2, 3)).astype(np.float32)
    expected = np.zeros((5, 4, 3), np.float32)
    for i in range(2):
        for j in range(3):
            for t in range(2):
                expected[:, i * 2 + t, j] = x[:, i, j] > th[i, j, t]
    case("binarize_per_element", g, x, expected)
