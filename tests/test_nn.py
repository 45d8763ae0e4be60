"""polyir.nn layers on their own: the relaxed logic forms against the naive 16-gate softmax sum,
gradients, hard gates against a truth table, wiring in state_dict, connection schemes, neurons'
discretisations against closed forms."""
import math

import numpy as np
import pytest
import torch

import polyir.nn as pnn
from golden.cases.logic import layer_ref, tree_ref

# The 16 relaxed gates in difflogic's order, written out (AND = ab, OR = a + b - ab, ...).
RELAXED = [
    lambda a, b: torch.zeros_like(a),
    lambda a, b: a * b,
    lambda a, b: a - a * b,
    lambda a, b: a,
    lambda a, b: b - a * b,
    lambda a, b: b,
    lambda a, b: a + b - 2 * a * b,
    lambda a, b: a + b - a * b,
    lambda a, b: 1 - (a + b - a * b),
    lambda a, b: 1 - (a + b - 2 * a * b),
    lambda a, b: 1 - b,
    lambda a, b: 1 - b + a * b,
    lambda a, b: 1 - a,
    lambda a, b: 1 - a + a * b,
    lambda a, b: 1 - a * b,
    lambda a, b: torch.ones_like(a),
]


def naive_mix(logits, a, b):
    """sum_g softmax(logits)_g * G_g(a, b), 16 gate evaluations per neuron."""
    p = torch.softmax(logits, -1)
    return sum(p[..., g] * RELAXED[g](a, b) for g in range(16))


def test_relaxed_logic_layer_equals_naive_16_gate_sum():
    torch.manual_seed(0)
    layer = pnn.LogicLayer(12, 50, seed=3).double().train()
    x = torch.rand(7, 12, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    want = naive_mix(layer.logits, x[:, layer.a], x[:, layer.b])
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    # and the same gradients, w.r.t. logits and inputs
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum(), (layer.logits, x))
    want_grads = torch.autograd.grad((want * g).sum(), (layer.logits, x))
    for got, exp in zip(grads, want_grads):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-12)


def test_logic_layer_gradients_flow():
    layer = pnn.LogicLayer(10, 20, seed=0).train()
    x = torch.rand(4, 10, requires_grad=True)
    layer(x).square().sum().backward()
    assert layer.logits.grad is not None and layer.logits.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_logic_layer_eval_is_the_truth_table_of_the_argmax_gate():
    layer = pnn.LogicLayer(9, 300, seed=1).eval()
    x = torch.randint(0, 2, (64, 9)).float()
    gate = layer.logits.argmax(-1).numpy()
    assert np.array_equal(layer.gate.numpy(), gate)
    want = layer_ref(x.numpy(), layer.a.numpy(), layer.b.numpy(), gate)
    assert np.array_equal(layer(x).numpy(), want)
    # train mode is relaxed: outputs differ from the hard gates somewhere
    assert not np.array_equal(layer.train()(x).detach().numpy(), want)


def test_every_gate_reaches_the_truth_table_in_eval():
    layer = pnn.LogicLayer(2, 16, connections=(np.zeros(16, int), np.ones(16, int)))
    with torch.no_grad():
        layer.logits.copy_(torch.eye(16) * 3)
    x = torch.tensor([[0., 0.], [0., 1.], [1., 0.], [1., 1.]])
    got = layer.eval()(x)
    assert np.array_equal(got.numpy(), layer_ref(x.numpy(), np.zeros(16, int), np.ones(16, int),
                                                 np.arange(16)))


def test_state_dict_round_trip_keeps_wiring():
    src = pnn.LogicLayer(30, 40, seed=1)
    dst = pnn.LogicLayer(30, 40, seed=2)
    assert not torch.equal(src.a, dst.a)
    sd = src.state_dict()
    assert {"a", "b", "logits"} <= set(sd)
    dst.load_state_dict(sd)
    assert torch.equal(src.a, dst.a) and torch.equal(src.b, dst.b)
    x = torch.rand(5, 30)
    assert torch.equal(src.eval()(x), dst.eval()(x))
    tree_src, tree_dst = pnn.LogicTree2d(2, 3, 2, 3, seed=1), pnn.LogicTree2d(2, 3, 2, 3, seed=2)
    tree_dst.load_state_dict(tree_src.state_dict())
    assert torch.equal(tree_src.leaves, tree_dst.leaves)


@pytest.mark.parametrize("n_in,n_out", [(10, 5), (10, 6), (11, 8), (64, 500), (5, 40), (784, 1000)])
def test_unique_connections_cover_inputs_without_repeated_pairs(n_in, n_out):
    layer = pnn.LogicLayer(n_in, n_out, connections="unique", seed=0)
    a, b = layer.a.numpy(), layer.b.numpy()
    assert set(a) | set(b) == set(range(n_in))
    assert (a != b).all()
    pairs = {(min(i, j), max(i, j)) for i, j in zip(a, b)}
    assert len(pairs) == min(n_out, n_in * (n_in - 1) // 2)


def test_unique_connections_need_enough_outputs():
    with pytest.raises(ValueError, match="unique"):
        pnn.LogicLayer(10, 4, connections="unique")


def test_random_connections_pick_two_distinct_inputs_and_are_seeded():
    layer = pnn.LogicLayer(7, 2000, seed=5)
    a, b = layer.a.numpy(), layer.b.numpy()
    assert (a != b).all() and a.min() >= 0 and max(a.max(), b.max()) < 7
    assert len(set(zip(a, b))) == 42  # all ordered pairs of distinct inputs show up
    assert torch.equal(pnn.LogicLayer(7, 2000, seed=5).a, layer.a)


def test_logic_tree2d_relaxed_matches_naive_tree_and_eval_matches_reference():
    torch.manual_seed(0)
    m = pnn.LogicTree2d(3, 4, 3, (3, 2), stride=(2, 1), padding=1, seed=4).double()
    x = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    # naive relaxed tree, written directly from the definition
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1))
    oh, ow = (6 + 2 - 3) // 2 + 1, (5 + 2 - 2) // 1 + 1
    want = torch.zeros(2, 4, oh, ow, dtype=torch.float64)
    for k in range(4):
        for oy in range(oh):
            for ox in range(ow):
                vals = [xp[:, c, oy * 2 + dy, ox + dx] for c, dy, dx in m.leaves[k].tolist()]
                gi = 0
                while len(vals) > 1:
                    half = len(vals) // 2
                    vals = [naive_mix(m.logits[k, gi + i], vals[2 * i], vals[2 * i + 1])
                            for i in range(half)]
                    gi += half
                want[:, k, oy, ox] = vals[0]
    torch.testing.assert_close(m.train()(x), want, rtol=1e-12, atol=1e-12)
    bits = torch.randint(0, 2, (3, 3, 6, 5)).double()
    ref = tree_ref(bits.numpy(), m.leaves.numpy(), m.gates.numpy(), (3, 2), (2, 1), (1, 1))
    assert np.array_equal(m.eval()(bits).numpy(), ref)


def test_orpool_pads_with_zero_and_groupsum():
    x = -torch.ones(1, 1, 2, 2)  # max over a window that is mostly padding reads the 0 padding
    assert pnn.OrPool2d(2, 2, padding=1)(x).max() == 0
    y = pnn.GroupSum(2, tau=2.0, beta=1.0)(torch.tensor([[1., 1., 0., 1., 0., 0.]]))
    assert y.tolist() == [[1.5, 1.0]]  # (2 + 1) / 2, (1 + 1) / 2


def test_binarize_layout_and_no_gradient_needed():
    m = pnn.Binarize(torch.tensor([0.0, 1.0]))
    y = m(torch.tensor([[0.5, 2.0, 0.0]]))
    assert y.tolist() == [[1, 0, 1, 1, 0, 0]]


# --- neurons -------------------------------------------------------------------------------------
def test_lif_surrogate_gradient_reaches_parameters_and_input():
    lif = pnn.LIF(tau=torch.full((3,), 5e-3), r=torch.ones(3), v_leak=torch.zeros(3),
                  v_threshold=torch.ones(3), v_reset=torch.zeros(3), dt=1e-3).train()
    assert not lif.tau.requires_grad  # time constants are fixed unless asked for
    lif.tau.requires_grad_(True)
    x = torch.full((2, 3), 3.0, requires_grad=True)
    state, total = None, 0
    for _ in range(10):
        z, state = lif(x, state)
        total = total + z.sum()
    assert total.item() > 0
    total.backward()
    assert x.grad.abs().sum() > 0 and lif.tau.grad.abs().sum() > 0
    assert all(isinstance(getattr(lif, f), torch.nn.Parameter) for f in lif.FIELDS)


def test_li_exact_matches_closed_form_and_euler_converges():
    tau, r, dt, x = 1e-2, 2.0, 1e-3, 0.7
    f64 = np.float64  # numpy float64 parameters stay float64
    exact = pnn.LI(f64(tau), f64(r), f64(0.0), dt=dt, discretization="exact")
    euler = pnn.LI(f64(tau), f64(r), f64(0.0), dt=dt)
    assert exact.tau.dtype == torch.float64
    inp = torch.full((1, 1), x, dtype=torch.float64)
    se = sx = None
    for k in range(1, 21):
        ve, se = euler(inp, se)
        vx, sx = exact(inp, sx)
        closed = r * x * (1 - math.exp(-k * dt / tau))
        assert abs(vx.item() - closed) < 1e-12
        assert abs(ve.item() - r * x * (1 - (1 - dt / tau) ** k)) < 1e-12  # Euler's own recursion


@pytest.mark.parametrize("tau_syn", [2e-3, 5e-3])  # the second equals tau_mem: the limit form
def test_cubali_exact_matches_a_fine_euler_integration(tau_syn):
    tau_mem, r, w_in, dt = 5e-3, 1.5, 2.0, 1e-3
    exact = pnn.CubaLI(tau_syn, tau_mem, r, 0.1, w_in, dt=dt, discretization="exact").double()
    x = torch.tensor([[0.3], [1.0]], dtype=torch.float64)
    state = None
    i = torch.zeros_like(x)
    v = torch.zeros_like(x)
    sub = 2000
    h = dt / sub
    for _ in range(5):
        vx, state = exact(x, state)
        for _ in range(sub):  # fine forward Euler of the same ODE
            i, v = i + h / tau_syn * (w_in * x - i), v + h / tau_mem * (0.1 - v + r * i)
        torch.testing.assert_close(vx, v, rtol=2e-3, atol=1e-6)
        torch.testing.assert_close(state.i, i, rtol=2e-3, atol=1e-6)


def test_cuba_exact_is_continuous_at_equal_time_constants():
    x = torch.tensor([[0.8]], dtype=torch.float64)
    outs = []
    for ts in (5e-3, 5e-3 * (1 + 1e-7)):
        m = pnn.CubaLI(ts, 5e-3, 1.0, 0.0, 1.0, dt=1e-3, discretization="exact").double()
        v, s = m(x, pnn.CubaState(torch.full_like(x, 0.3), torch.full_like(x, -0.2)))
        outs.append(v.item())
    assert abs(outs[0] - outs[1]) < 1e-7


def test_neuron_state_shapes_broadcast_scalars_and_reset():
    m = pnn.CubaLIF(1e-3, 2e-3, 1.0, 0.0, 1.0, dt=1e-4)
    z, s = m(torch.ones(3, 5))
    assert z.shape == (3, 5) and s.i.shape == (3, 5) and s.v.shape == (3, 5)
    big = pnn.IF(r=1.0, v_threshold=0.5, v_reset=-1.0, dt=1.0)
    z, s = big(torch.tensor([[1.0, 0.2]]))
    assert z.tolist() == [[1.0, 0.0]] and s.v.tolist() == [[-1.0, pytest.approx(0.2)]]


def test_neuron_constructor_errors():
    with pytest.raises(ValueError, match="dt"):
        pnn.LI(1e-2, 1.0, 0.0, dt=None)
    with pytest.raises(ValueError, match="discretization"):
        pnn.LI(1e-2, 1.0, 0.0, dt=1e-3, discretization="rk4")


def test_delay_shifts_by_rounded_steps():
    d = pnn.Delay(np.array([0.0, 2e-3]), dt=1e-3)
    xs = torch.arange(1, 6, dtype=torch.float32).reshape(5, 1, 1).expand(5, 1, 2)
    state, ys = None, []
    for x in xs:
        y, state = d(x, state)
        ys.append(y)
    ys = torch.stack(ys)[:, 0]
    assert ys[:, 0].tolist() == [1, 2, 3, 4, 5] and ys[:, 1].tolist() == [0, 0, 1, 2, 3]


def test_activation_module_alpha_defaults_and_errors():
    assert pnn.Activation("leaky_relu").alpha == 0.01
    y = pnn.Activation("hardtanh", 0.5)(torch.tensor([-2.0, 0.1, 3.0]))
    assert y.tolist() == [-0.5, pytest.approx(0.1), 0.5]
    with pytest.raises(ValueError, match="unknown activation"):
        pnn.Activation("swish")
