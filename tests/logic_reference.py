"""Logic nets for tests and their numpy truth: the 16 gates written out in difflogic's order
(independently of polyir), and random Input(bit) -> LogicLayer... -> GroupSum graphs."""
import numpy as np

from polyir import ir

GATES = (lambda a, b: np.zeros_like(a), lambda a, b: a & b, lambda a, b: a & ~b, lambda a, b: a,
         lambda a, b: ~a & b, lambda a, b: b, lambda a, b: a ^ b, lambda a, b: a | b,
         lambda a, b: ~(a | b), lambda a, b: ~(a ^ b), lambda a, b: ~b, lambda a, b: a | ~b,
         lambda a, b: ~a, lambda a, b: ~a | b, lambda a, b: ~(a & b), lambda a, b: np.ones_like(a))


def random_logic_net(seed, n_in, widths, k, tau=1.0, beta=0.0):
    rng = np.random.default_rng(seed)
    layers, prev = [], n_in
    for w in widths:
        layers.append(ir.LogicLayer(rng.integers(0, prev, w), rng.integers(0, prev, w),
                                    rng.integers(0, 16, w)))
        prev = w
    return ir.Graph.sequential(*layers, ir.GroupSum(k, tau=tau, beta=beta), input_shape=(n_in,),
                               input_elem="bit")
