"""Option sweeps over graphs that are built once (every target compiles each graph once): batch
sizes around the 64-sample word and the 256-sample tile (0, 1, 63, 64, 65, 255, 257), on a logic
net with real and bit inputs and on a small CNN; every activation in float64."""
import numpy as np

import polyir as P
from golden import case, golden
from golden.cases.ffnn import ACT_REFS, conv_ref, pool_sum_ref
from golden.cases.logic import layer_ref

BATCHES = (0, 1, 63, 64, 65, 255, 257)


@golden
def batch_sweep_logic(rng):
    th = np.array([-0.3, 0.4], np.float32)
    a, b, gate = rng.integers(0, 10, 40), rng.integers(0, 10, 40), rng.integers(0, 16, 40)
    g = P.Graph.sequential(P.Binarize(th), P.LogicLayer(a, b, gate), P.GroupSum(4, tau=2.0),
                           input_shape=(5,))
    for n in BATCHES:
        x = rng.normal(size=(n, 5)).astype(np.float32)
        enc = (x[:, :, None] > th).reshape(n, 10).astype(np.int64)
        y = layer_ref(enc, a, b, gate).reshape(n, 4, 10).sum(-1) / 2.0
        case(f"batch_sweep_logic_{n}", g, x, y.astype(np.float32))


@golden
def batch_sweep_bit_input(rng):
    a, b, gate = rng.integers(0, 70, 90), rng.integers(0, 70, 90), rng.integers(0, 16, 90)
    g = P.Graph.sequential(P.LogicLayer(a, b, gate), input_shape=(70,), input_elem="bit")
    for n in BATCHES:
        x = rng.integers(0, 2, (n, 70)).astype(np.float32)
        case(f"batch_sweep_bit_input_{n}", g, x, layer_ref(x, a, b, gate).astype(np.float32))


@golden
def batch_sweep_cnn(rng):
    w = rng.normal(size=(2, 1, 3, 3)).astype(np.float32)
    bias = rng.normal(size=2).astype(np.float32)
    wf, bf = rng.normal(size=(3, 18)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    g = P.Graph.sequential(P.Conv2d(None, w, 1, 1, 1, 1, bias), P.Activation("tanh"),
                           P.AvgPool2d((2, 2), (2, 2)), P.Flatten(start_dim=0), P.Affine(wf, bf),
                           input_shape=(1, 6, 6))
    for n in BATCHES:
        x = rng.normal(size=(n, 1, 6, 6)).astype(np.float32)
        h = np.tanh(conv_ref(x, w, bias, (1, 1), (1, 1), (1, 1), 1))
        h = pool_sum_ref(h, (2, 2), (2, 2), (0, 0)) / 4
        case(f"batch_sweep_cnn_{n}", g, x, h.reshape(n, 18) @ wf.T.astype(np.float64) + bf,
             rtol=1e-4, atol=1e-5)


def _float64_activation(fn):
    def make(rng):
        alpha, ref = ACT_REFS[fn]
        node = P.Activation(fn) if alpha is None else P.Activation(fn, alpha)
        # a float64 parameter makes the graph float64 on every backend (torch's dtype rule)
        g = P.Graph.sequential(P.Scale(np.ones(9)), node, input_shape=(9,))
        x = np.linspace(-4, 4, 9 * 3).reshape(3, 9)
        case(f"float64_activation_{fn}", g, x, ref(x, node.alpha), rtol=1e-12, atol=1e-14)
    make.__name__ = f"float64_activation_{fn}"
    return make


for _fn in ACT_REFS:
    golden(_float64_activation(_fn))
