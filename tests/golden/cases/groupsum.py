"""GroupSum: y_c = (sum of the bits in group c + beta) / tau over k contiguous groups."""
import numpy as np

import polyir as P
from golden import case, golden


def groupsum_ref(x, k, tau=1.0, beta=0.0):
    n = x.shape[1] // k
    return np.stack([(x[:, c * n:(c + 1) * n].sum(1) + beta) / tau for c in range(k)], 1)


@golden
def groupsum_plain(rng):
    g = P.Graph.sequential(P.GroupSum(3), input_shape=(12,), input_elem="bit")
    x = rng.integers(0, 2, (10, 12)).astype(np.float32)
    case("groupsum_plain", g, x, groupsum_ref(x, 3).astype(np.float32))


@golden
def groupsum_tau_beta(rng):
    g = P.Graph.sequential(P.GroupSum(4, tau=2.5, beta=1.5), input_shape=(40,), input_elem="bit")
    x = rng.integers(0, 2, (33, 40)).astype(np.float32)
    case("groupsum_tau_beta", g, x, groupsum_ref(x, 4, 2.5, 1.5), rtol=1e-6, atol=1e-6)


@golden
def groupsum_one_group(rng):
    g = P.Graph.sequential(P.GroupSum(1, tau=1.0), input_shape=(130,), input_elem="bit")
    x = rng.integers(0, 2, (3, 130)).astype(np.float32)
    case("groupsum_one_group", g, x, groupsum_ref(x, 1).astype(np.float32))


@golden
def groupsum_wide_groups(rng):
    # 10 groups of 100: popcounts beyond one 64-bit word per group
    g = P.Graph.sequential(P.GroupSum(10, tau=10.0), input_shape=(1000,), input_elem="bit")
    x = (rng.random((70, 1000)) < 0.7).astype(np.float32)
    case("groupsum_wide_groups", g, x, groupsum_ref(x, 10, 10.0), rtol=1e-6, atol=1e-6)
