"""polyir.export: what each torch construct becomes, the handler registry, duck-typed difflogic /
torchlogix layers, stateful models, and the errors. Outputs are compared with the original torch
model (an independent computation) after polyir.to_torch, or with numpy references written here."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import polyir
import polyir.nn as pnn
from polyir import ir
from models import RecurrentSNN
from torchlogix_layers import load as torchlogix_load
from polyir.exporters import HANDLERS, handler, register
from polyir.exporters.handlers import load_builtin


def kinds(g):
    return [type(k).__name__ for k in g.nodes.values()]


def eval_equal(model, g, x, atol=0.0):
    model.eval()
    m = polyir.to_torch(g).eval()
    with torch.no_grad():
        want, got = model(x), m(x)
    if atol == 0:
        assert torch.equal(got, want), (got - want).abs().max()
    else:
        assert (got - want).abs().max() <= atol


@pytest.fixture
def registry():
    """Undo user registrations made by a test (the built-in ones are loaded first, so that they
    are kept)."""
    load_builtin()
    before = dict(HANDLERS)
    yield
    HANDLERS.clear()
    HANDLERS.update(before)


# --- torch.nn and functions ----------------------------------------------------------------------
class Functions(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x):
        h = self.fc(x)
        return (torch.tanh(h), F.relu(h), F.leaky_relu(h, 0.2), F.gelu(h), F.silu(h),
                F.elu(h, alpha=0.5), F.softplus(h, beta=2.0), torch.exp(h), F.hardtanh(h, -0.3, 0.3),
                torch.sigmoid(h), h.relu(), h * 3.0, -h, h / 4.0)


def test_functions_become_activations_and_scales():
    torch.manual_seed(0)
    model = Functions()
    g = polyir.export(model, torch.randn(2, 4))
    acts = [(k.fn, k.alpha) for k in g.nodes.values() if isinstance(k, ir.Activation)]
    assert acts == [("tanh", 0.0), ("relu", 0.0), ("leaky_relu", pytest.approx(0.2)),
                    ("gelu", 0.0), ("silu", 0.0), ("elu", 0.5), ("softplus", 2.0), ("exp", 0.0),
                    ("hardtanh", pytest.approx(0.3)), ("sigmoid", 0.0), ("relu", 0.0)]
    scales = [float(k.scale[0]) for k in g.nodes.values() if isinstance(k, ir.Scale)]
    assert scales == [3.0, -1.0, 0.25]
    assert len(g.outputs) == 14
    model.eval()
    m = polyir.to_torch(g).eval()
    x = torch.randn(9, 4)
    with torch.no_grad():
        for want, got in zip(model(x), m(x)):
            assert (got - want).abs().max() <= 1e-6


def test_linear_with_and_without_bias_matches_numpy():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2, bias=False))
    g = polyir.export(model, torch.randn(1, 3))
    assert kinds(g) == ["Input", "Affine", "Linear", "Output"]
    a, lin = g.nodes["linear_0"], g.nodes["linear_1"]
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    ref = (x @ a.weight.T + a.bias) @ lin.weight.T
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(x)).numpy(), ref, rtol=1e-5, atol=1e-6)
    assert a.weight.dtype == np.float32


def test_add_of_two_values_is_fan_in():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):
            h = torch.relu(self.a(x)) + self.b(x)
            return self.c(h) + self.c(h + x)  # weight sharing: two nodes with equal weights

    torch.manual_seed(2)
    model = Residual()
    g = polyir.export(model, torch.randn(2, 4))
    assert sorted(e[0] for e in g.predecessors("c")) == ["b", "relu"]
    assert sorted(e[0] for e in g.predecessors("c_1")) == ["b", "input", "relu"]
    assert sorted(e[0] for e in g.predecessors("output")) == ["c", "c_1"]
    eval_equal(model, g, torch.randn(8, 4), atol=1e-6)


def test_conv_flatten_variants():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv1d(2, 3, 3, padding=1)
            self.c2 = nn.Conv2d(3, 4, 3, stride=2)
            self.fl = nn.Flatten(start_dim=2)  # (B, 4, 3, 3) -> (B, 4, 9)
            self.fc = nn.Linear(36, 2)

        def forward(self, x, img):
            y = self.c1(x).flatten(1)
            z = self.fl(self.c2(img))
            return y, self.fc(z.view(z.size(0), -1)), torch.flatten(self.c2(img), 1)

    torch.manual_seed(3)
    model = Net()
    g = polyir.export(model, (torch.randn(2, 2, 5), torch.randn(2, 3, 8, 8)))
    assert g.inputs == ["x", "img"]
    assert g.nodes["c1"].input_shape == 5 and g.nodes["c2"].input_shape == (8, 8)
    flats = [(k.start_dim, k.end_dim) for k in g.nodes.values() if isinstance(k, ir.Flatten)]
    assert flats == [(0, -1), (1, -1), (0, -1), (0, -1)]
    assert g.metadata["input_shape.img"].tolist() == [3, 8, 8]
    model.eval()
    m = polyir.to_torch(g).eval()
    x, img = torch.randn(5, 2, 5), torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        for want, got in zip(model(x, img), m(x, img)):
            assert (got - want).abs().max() <= 1e-6


def test_module_options_and_skips():
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(3, 4), nn.Identity(), nn.LeakyReLU(0.1),
                          nn.ELU(0.7), nn.Softplus(beta=3.0), nn.Hardtanh(-2.0, 2.0), nn.GELU(),
                          nn.SiLU(), nn.Sigmoid())
    g = polyir.export(model, torch.randn(2, 3))
    assert kinds(g) == ["Input", "Affine"] + ["Activation"] * 7 + ["Output"]
    acts = [(k.fn, k.alpha) for k in g.nodes.values() if isinstance(k, ir.Activation)]
    assert acts[:4] == [("leaky_relu", pytest.approx(0.1)), ("elu", pytest.approx(0.7)),
                        ("softplus", 3.0), ("hardtanh", 2.0)]
    eval_equal(model, g, torch.randn(6, 3), atol=1e-6)


def test_root_module_that_is_a_leaf():
    lin = nn.Linear(3, 2)
    g = polyir.export(lin, torch.randn(1, 3))
    assert kinds(g) == ["Input", "Affine", "Output"]
    np.testing.assert_array_equal(g.nodes["linear"].weight, lin.weight.detach().numpy())


def test_metadata_records_input_shape_and_dtype():
    g = polyir.export(nn.Sequential(nn.Flatten(), nn.Linear(6, 2)), torch.randn(4, 2, 3))
    assert g.metadata["input_shape"].tolist() == [2, 3]
    assert g.metadata["input_dtype"] == "float32"
    assert g.metadata["producer"] == "polyir.export"
    g64 = polyir.export(nn.Linear(2, 2).double(), torch.randn(1, 2, dtype=torch.float64))
    assert g64.metadata["input_dtype"] == "float64"
    assert g64.nodes["linear"].weight.dtype == np.float64


# --- the registry --------------------------------------------------------------------------------
class Clip(nn.Module):
    """Not traceable (data-dependent branch): only a handler can export it."""

    def forward(self, x):
        if x.max() > 1:
            return x.clamp(-1, 1)
        return x


class Noise(nn.Module):
    def forward(self, x):
        return x + 0.0 * torch.randn_like(x)


def test_user_handler_makes_a_leaf_and_none_skips(registry):
    model = nn.Sequential(nn.Linear(3, 3), Clip(), Noise(), nn.Linear(3, 1))
    with pytest.raises(polyir.GraphError, match="cannot trace"):
        polyir.export(model, torch.randn(2, 3))

    @handler(Clip)
    def _clip(ctx, name, module, values):
        assert ctx.input_shape == (3,) and ctx.output_shape == (3,)
        assert ctx.target == "1" and ctx.input_elem == "real"
        return polyir.Activation("hardtanh", 1.0)

    register(Noise, None)
    g = polyir.export(model, torch.randn(2, 3))
    assert kinds(g) == ["Input", "Affine", "Activation", "Affine", "Output"]
    eval_equal(model, g, 3 * torch.randn(7, 3), atol=1e-6)


class Twice(nn.Module):
    def forward(self, x):
        return 2 * x + 1


def test_handler_may_return_a_graph_fragment(registry):
    @handler(Twice)
    def _twice(ctx, name, module, values):
        n = ctx.input_shape[0]
        f = ir.Graph()
        f.add("x", ir.Input((n,)))
        f.add("double", ir.Affine(2 * np.eye(n, dtype=np.float32), np.ones(n, np.float32)))
        f.add("y", ir.Output((n,)))
        f.connect("x", "double")
        f.connect("double", "y")
        return f

    model = nn.Sequential(nn.Linear(2, 3), Twice(), nn.Tanh())
    g = polyir.export(model, torch.randn(1, 2))
    assert "twice_1_double" in g.nodes
    eval_equal(model, g, torch.randn(4, 2), atol=1e-6)


class Gain(nn.Module):
    """A gain whose own forward fails for mode='fast'."""

    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return 3 * x if self.mode == "slow" else x.no_such_method()


def test_a_handler_check_refuses_by_attributes_before_the_model_runs(registry):
    def refusal(m):
        return None if m.mode == "slow" else (f"mode={m.mode!r}", "mode", "use mode='slow'")

    @handler(Gain, check=refusal)
    def _gain(ctx, name, module, values):
        return polyir.Scale(np.full(ctx.input_shape, 3.0, np.float32))

    model = nn.Sequential(nn.Linear(2, 3), Gain("fast"))
    with pytest.raises(polyir.GraphError, match="mode='fast'") as err:
        polyir.export(model, torch.randn(1, 2))
    assert (err.value.node, err.value.field, err.value.fix) == ("1", "mode", "use mode='slow'")
    model[1].mode = "slow"
    eval_equal(model, polyir.export(model, torch.randn(1, 2)), torch.randn(4, 2), atol=1e-6)


def test_subclass_overriding_forward_is_not_taken_for_its_base():
    class Shifted(nn.Linear):
        def forward(self, x):
            return super().forward(x)[:, :1]

    class Plain(nn.Linear):
        pass

    g = polyir.export(nn.Sequential(Plain(2, 2)), torch.randn(1, 2))
    assert kinds(g) == ["Input", "Affine", "Output"]
    with pytest.raises(polyir.GraphError, match="function torch._C._nn.linear") as exc:
        polyir.export(nn.Sequential(Shifted(2, 2)), torch.randn(1, 2))  # traced into: F.linear
    assert "@polyir.exporters.handler" in exc.value.fix


# --- logic layers ------------------------------------------------------------------------------
def relaxed_ops(a, b):
    """The 16 relaxed gates in difflogic's order, written out (independent of polyir)."""
    return torch.stack([torch.zeros_like(a), a * b, a - a * b, a, b - a * b, b, a + b - 2 * a * b,
                        a + b - a * b, 1 - (a + b - a * b), 1 - (a + b - 2 * a * b), 1 - b,
                        1 - b + a * b, 1 - a, 1 - a + a * b, 1 - a * b, torch.ones_like(a)], -1)


class GradFactorFunction(torch.autograd.Function):
    """difflogic's GradFactor as its documentation states it: identity forward, gradient times
    the factor backward (written here, independent of polyir)."""

    @staticmethod
    def forward(ctx, x, f):
        ctx.f = f
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * ctx.f, None


class LogicLayer(nn.Module):
    """A module laid out like difflogic's LogicLayer (same class name and attributes)."""

    def __init__(self, in_dim, out_dim, seed, grad_factor=1.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.grad_factor = grad_factor
        self.weights = nn.Parameter(torch.randn(out_dim, 16, generator=g))
        self.indices = (torch.randint(0, in_dim, (out_dim,), generator=g),
                        torch.randint(0, in_dim, (out_dim,), generator=g))

    def forward(self, x):
        if self.grad_factor != 1.0:
            x = GradFactorFunction.apply(x, self.grad_factor)
        a, b = x[..., self.indices[0]], x[..., self.indices[1]]
        if self.training:
            w = torch.softmax(self.weights, -1)
        else:
            w = F.one_hot(self.weights.argmax(-1), 16).float()
        return (relaxed_ops(a, b) * w).sum(-1)


class GroupSum(nn.Module):
    def __init__(self, k, tau):
        super().__init__()
        self.k, self.tau = k, tau

    def forward(self, x):
        return x.reshape(*x.shape[:-1], self.k, -1).sum(-1) / self.tau


def test_difflogic_layout_is_recognised_without_import():
    model = nn.Sequential(pnn.Binarize(torch.tensor([0.3, 0.7])), LogicLayer(8, 24, 0),
                          LogicLayer(24, 12, 1), GroupSum(3, 2.0))
    g = polyir.export(model, torch.rand(2, 4))
    assert kinds(g) == ["Input", "Binarize", "LogicLayer", "LogicLayer", "GroupSum", "Output"]
    node = g.nodes["logiclayer_1"]
    np.testing.assert_array_equal(node.a, model[1].indices[0].numpy())
    np.testing.assert_array_equal(node.gate, model[1].weights.argmax(-1).numpy())
    assert g.nodes["groupsum_3"].tau == 2.0
    x = torch.rand(64, 4)
    eval_equal(model, g, x)
    model.train()
    m = polyir.to_torch(g).train()
    assert (m(x) - model(x)).abs().max() <= 1e-5  # same relaxed mixture in train mode


def test_logic_input_declared_bit_when_fed_bits():
    model = nn.Sequential(nn.Flatten(), pnn.LogicLayer(8, 6, seed=0), pnn.GroupSum(2))
    bits = (torch.rand(3, 2, 4) > 0.5).float()
    g = polyir.export(model, bits)
    assert g.nodes["input"].elem == "bit"
    eval_equal(model, g, (torch.rand(20, 2, 4) > 0.5).float())
    with pytest.raises(polyir.GraphError, match="not all 0/1") as exc:
        polyir.export(model, torch.rand(3, 2, 4))
    assert exc.value.node == "input" and "Binarize" in exc.value.fix


def test_maxpool_on_bits_is_or_pool_and_refused_on_reals():
    model = nn.Sequential(nn.MaxPool2d(2, padding=1), nn.Flatten(), pnn.LogicLayer(9, 4, seed=0))
    g = polyir.export(model, (torch.rand(2, 1, 4, 4) > 0.5).float())
    assert kinds(g)[1] == "OrPool2d" and g.nodes["maxpool2d_0"].padding == (1, 1)
    eval_equal(model, g, (torch.rand(30, 1, 4, 4) > 0.5).float())
    real = nn.Sequential(nn.MaxPool2d(2, padding=1))  # on reals: a MaxPool2d, padding never wins
    g = polyir.export(real, torch.randn(1, 1, 4, 4))
    assert kinds(g)[1] == "MaxPool2d"
    eval_equal(real, g, -torch.rand(5, 1, 4, 4))


def torchlogix_layers():
    """torchlogix (a test dependency); these tests skip where it is not installed."""
    return torchlogix_load()


def test_torchlogix_dense_and_binarization():
    L = torchlogix_layers()
    torch.manual_seed(4)
    th = torch.tensor([[0.2, 0.5], [0.4, 0.6], [0.1, 0.9]])  # per feature
    model = nn.Sequential(L.FixedBinarization(th, feature_dim=-2), nn.Flatten(),
                          L.LogicDense(6, 16, parametrization_kwargs={"weight_init": "random"}),
                          L.LogicDense(16, 8, parametrization_kwargs={"weight_init": "random",
                                                                      "temperature": 0.5}),
                          L.GroupSum(2, 3.0, beta=1.0))
    g = polyir.export(model, torch.rand(2, 3))
    b = g.nodes["fixedbinarization_0"]
    assert b.axis == 0 and b.thresholds.shape == (3, 2)
    d = g.nodes["logicdense_2"]
    idx = model[2].connections.indices.numpy()
    np.testing.assert_array_equal(d.a, idx[0])
    np.testing.assert_array_equal(d.b, idx[1])
    np.testing.assert_allclose(g.nodes["logicdense_3"].logits,
                               model[3].weight.detach().numpy() / 0.5, rtol=1e-6)
    assert g.nodes["groupsum_4"].beta == 1.0
    x = torch.rand(100, 3)
    eval_equal(model, g, x)
    model.train()
    assert (polyir.to_torch(g).train()(x) - model(x)).abs().max() <= 1e-5


def test_torchlogix_conv_tree_matches():
    L = torchlogix_layers()
    torch.manual_seed(5)
    raw = {"weight_init": "random"}
    model = nn.Sequential(
        L.FixedBinarization(torch.tensor([[0.3, 0.6], [0.5, 0.7]]), feature_dim=1),
        L.LogicConv2d(in_dim=6, channels=4, num_kernels=5, tree_depth=3, receptive_field_size=3,
                      stride=1, padding=1, parametrization_kwargs=raw),
        L.OrPooling2d(2, 2, 1), nn.Flatten(), L.LogicDense(80, 40, parametrization_kwargs=raw),
        L.GroupSum(4, 1.0))
    g = polyir.export(model, torch.rand(1, 2, 6, 6))
    assert g.nodes["fixedbinarization_0"].axis == 0  # (C, T) thresholds, bits folded per channel
    tree = g.nodes["logicconv2d_1"]
    assert tree.leaves.shape == (5, 8, 3) and tree.gates.shape == (5, 7) and tree.padding == (1, 1)
    x = torch.rand(40, 2, 6, 6)
    eval_equal(model, g, x)
    model.train()
    assert (polyir.to_torch(g).train()(x) - model(x)).abs().max() <= 1e-5


def test_torchlogix_other_parametrisations_fail_naming_them():
    L = torchlogix_layers()
    for p in ("warp", "light"):
        model = nn.Sequential(L.LogicDense(4, 4, parametrization=p))
        with pytest.raises(polyir.GraphError, match=p.capitalize()) as exc:
            polyir.export(model, (torch.rand(1, 4) > 0.5).float())
        assert exc.value.field == "parametrization" and "raw" in str(exc.value)
    learn = nn.Sequential(L.LogicDense(4, 4, connections="learnable"))
    with pytest.raises(polyir.GraphError, match="LearnableDenseConnections"):
        polyir.export(learn, (torch.rand(1, 4) > 0.5).float())


# --- stateful models ---------------------------------------------------------------------------
def recurrent_lif(n=6):
    return RecurrentSNN(pnn.LIF(tau=0.01, r=1.0, v_leak=0.0, v_threshold=0.5, dt=1e-3),
                        pnn.LI(tau=np.full(2, 0.02, np.float32), r=1.0, v_leak=0.0, dt=1e-3),
                        3, n, 2)


def test_recurrent_state_becomes_a_recurrent_edge():
    torch.manual_seed(6)
    model = recurrent_lif()
    with torch.no_grad():
        model.fc.weight.mul_(10)
    g = polyir.export(model, torch.randn(2, 3))
    assert kinds(g) == ["Input", "Affine", "Linear", "LIF", "Affine", "LI", "Output"]
    assert ("rec", "lif") in g.edges and ("lif", "rec") in g.edges
    assert g.order()[1] == {("lif", "rec")}  # the spikes are read one step late
    assert g.metadata["dt"] == 1e-3
    assert g.nodes["lif"].tau.shape == (6,)  # scalar parameters broadcast to the neuron shape
    xs = torch.randn(25, 4, 3)
    state, ys = None, []
    model.eval()
    with torch.no_grad():
        for t in range(len(xs)):
            y, state = model(xs[t], state)
            ys.append(y)
        got = polyir.to_torch(g).eval().run(xs)
    assert (got - torch.stack(ys)).abs().max() <= 1e-6


def test_stateful_single_step_model():
    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 3)
            self.lif = pnn.CubaLIF(5e-3, 1e-2, 1.0, 0.0, 0.2, dt=1e-3)

        def forward(self, x):
            z, _ = self.lif(self.fc(x))
            return z

    model = Step()
    g = polyir.export(model, torch.randn(1, 2))
    assert kinds(g) == ["Input", "Affine", "CubaLIF", "Output"]
    x = 20 * torch.randn(8, 2)
    y, _ = polyir.to_torch(g).eval()(x)
    with torch.no_grad():
        assert torch.equal(y, model.eval()(x))


def test_state_errors():
    class ReadsLate(nn.Module):  # an output read straight from the previous step's state
        def __init__(self):
            super().__init__()
            self.lif = pnn.LIF(0.01, 1.0, 0.0, 0.5, dt=1e-3)
            self.fc = nn.Linear(3, 3)

        def forward(self, x, state=None):
            z_prev, s = state
            z, s = self.lif(x, s)
            return self.fc(z_prev) + z, (z, s)

    with pytest.raises(polyir.GraphError, match="previous step's state") as exc:
        polyir.export(ReadsLate(), torch.randn(1, 3))
    assert exc.value.node == "output"

    class NoCycle(nn.Module):  # a late value that closes no cycle: polyir cannot delay it
        def __init__(self):
            super().__init__()
            self.lif = pnn.LIF(0.01, 1.0, 0.0, 0.5, dt=1e-3)
            self.fc, self.rec = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x, state=None):
            z_prev, s = state
            z, s = self.lif(x, s)
            return torch.tanh(self.fc(x) + self.rec(z_prev)), (z, s)

    with pytest.raises(polyir.GraphError, match="recurrent edges") as exc:
        polyir.export(NoCycle(), torch.randn(1, 3))
    assert exc.value.field == "edges" and exc.value.node == "rec"  # it reads the late value

    class Swapped(nn.Module):  # a state handed to the wrong module
        def __init__(self):
            super().__init__()
            self.a = pnn.LIF(0.01, 1.0, 0.0, 0.5, dt=1e-3)
            self.b = pnn.LIF(0.01, 1.0, 0.0, 0.5, dt=1e-3)

        def forward(self, x, state=None):
            sa, sb = state
            za, sa = self.a(x, sb)
            zb, sb = self.b(za, sa)
            return zb, (sa, sb)

    with pytest.raises(polyir.GraphError, match="receives state") as exc:
        polyir.export(Swapped(), torch.randn(1, 3))
    assert exc.value.node == "a"

    class NoNewState(nn.Module):
        def __init__(self):
            super().__init__()
            self.lif = pnn.LIF(0.01, 1.0, 0.0, 0.5, dt=1e-3)

        def forward(self, x, state=None):
            return self.lif(x, state)[0]

    with pytest.raises(polyir.GraphError, match=r"\(outputs, new_state\)"):
        polyir.export(NoNewState(), torch.randn(1, 3))

    class TwoDt(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = pnn.LI(0.01, 1.0, 0.0, dt=1e-3)
            self.b = pnn.LI(0.01, 1.0, 0.0, dt=1e-4)

        def forward(self, x):
            return self.b(self.a(x)[0])[0]

    with pytest.raises(polyir.GraphError, match="dt=0.0001 differs"):
        polyir.export(TwoDt(), torch.randn(1, 3))


# --- errors --------------------------------------------------------------------------------------
class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        h = self.fc(x)
        if h.sum() > 0:
            return h
        return -h


def test_untraceable_model_names_the_fx_node():
    with pytest.raises(polyir.GraphError, match="cannot trace Branchy") as exc:
        polyir.export(Branchy(), torch.randn(2, 3))
    assert exc.value.node == "gt"  # the comparison fed to `if`
    assert "@polyir.exporters.handler" in exc.value.fix


def test_unknown_module_and_function_name_the_fx_node():
    with pytest.raises(polyir.GraphError, match="no polyir form") as exc:
        polyir.export(nn.Sequential(nn.Linear(3, 4), nn.PReLU()), torch.randn(2, 3))
    assert exc.value.node == "prelu_1" and "fx node '_1'" in str(exc.value)
    assert "polyir.exporters.handler(PReLU)" in exc.value.fix
    assert "docs/export.md" in exc.value.fix and "None" not in exc.value.fix  # never "skip it"

    class Cum(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 1)

    with pytest.raises(polyir.GraphError, match="torch.cumsum.*no polyir form") as exc:
        polyir.export(Cum(), torch.randn(2, 3))
    assert exc.value.node == "cumsum" and "docs/export.md" in exc.value.fix


@pytest.mark.parametrize("model, x, match", [
    (nn.Sequential(nn.Linear(3, 4)), torch.randn(2, 5), r"given \(2, 5\)"),
    (nn.Sequential(nn.Conv2d(1, 2, 3)), torch.randn(2, 3, 8, 8), "channels"),
    (nn.Sequential(nn.Linear(3, 4)), torch.tensor(1.0), "needs a batch dim"),
])
def test_wrong_example_input_shapes(model, x, match):
    with pytest.raises(polyir.GraphError, match=match):
        polyir.export(model, x)


def test_wrong_input_shape_after_import():
    g = polyir.export(nn.Sequential(nn.Linear(3, 4)), torch.randn(2, 3))
    with pytest.raises(polyir.GraphError, match=r"expected \(batch, 3\)"):
        polyir.to_torch(g)(torch.randn(2, 5))


def test_missing_dt_is_a_clear_error():
    model = nn.Sequential(nn.Linear(2, 3), pnn.LI(0.01, 1.0, 0.0, dt=1e-3))
    g = polyir.export(model, torch.randn(1, 2))
    del g.metadata["dt"]
    with pytest.raises(polyir.GraphError, match="dt") as exc:
        polyir.to_torch(g)
    assert exc.value.node == "li_1" and "dt=" in exc.value.fix
    assert polyir.to_torch(g, dt=1e-3).dt == 1e-3


@pytest.mark.parametrize("module, match", [
    (nn.Softplus(threshold=5), "threshold=5"),
    (nn.GELU(approximate="tanh"), "approximate='tanh'"),
    (nn.Flatten(0), "batch dim"),
    (nn.AvgPool2d(2, ceil_mode=True), "ceil_mode"),
])
def test_unsupported_options_are_refused(module, match):
    with pytest.raises(polyir.GraphError, match=match) as exc:
        polyir.export(nn.Sequential(module), torch.randn(2, 1, 4, 4))
    assert exc.value.fix and ", None)" not in exc.value.fix  # what to do; never "skip it"


def test_indexing_is_refused():
    class Index(nn.Module):
        def forward(self, x):
            return x[:, :1]

    with pytest.raises(polyir.GraphError, match="indexes a tensor") as exc:
        polyir.export(Index(), torch.randn(2, 2))
    assert "docs/export.md" in exc.value.fix


def test_torchlogix_binarization_on_images_folds_into_the_last_dim():
    L = torchlogix_layers()
    model = nn.Sequential(L.FixedBinarization(torch.tensor([0.3, 0.6])), nn.Flatten())
    g = polyir.export(model, torch.rand(2, 3, 4, 5), input_names=["img"])
    assert g.inputs == ["img"]
    b = g.nodes["fixedbinarization_0"]
    assert b.axis == 2 and b.thresholds.shape == (2,)  # feature_dim=-2 of (B, C, H, W, T)
    x = torch.rand(7, 3, 4, 5)
    assert torch.equal(polyir.to_torch(g)(x), model(x))
    # numpy reference for one element: W index i gives bits 2i, 2i+1
    bits = polyir.to_torch(g)(x).reshape(7, 3, 4, 10)
    assert bits[0, 1, 2, 2 * 3 + 1] == float(x[0, 1, 2, 3] > 0.6)


def test_whole_state_threaded_through_one_delay():
    class Delayed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.d = pnn.Delay(torch.tensor([2e-3, 1e-3]), dt=1e-3)

        def forward(self, x, state=None):
            return self.d(self.fc(x), state)

    model = Delayed()
    g = polyir.export(model, torch.rand(1, 2))
    np.testing.assert_allclose(g.nodes["d"].delay, [2e-3, 1e-3])
    xs = torch.rand(6, 3, 2)
    state, ys = None, []
    with torch.no_grad():
        for t in range(len(xs)):
            y, state = model(xs[t], state)
            ys.append(y)
        got = polyir.to_torch(g).run(xs)
    assert torch.equal(got, torch.stack(ys))
    assert torch.equal(got[2:, :, 0], model.fc(xs[:-2])[:, :, 0].detach())  # two steps late


# --- everyday CNN / MLP layers -------------------------------------------------------------------
def random_batchnorm(bn, seed):
    """Give a BatchNorm non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(bn.num_features, generator=g) * 2 - 1)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.rand(bn.num_features, generator=g) - 0.5)
    return bn


def batchnorm_reference(x, bn):
    """Eval-mode BatchNorm written out: (x - mean) / sqrt(var + eps) * weight + bias."""
    view = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = bn.running_mean.reshape(view), bn.running_var.reshape(view)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.reshape(view) + bn.bias.reshape(view)


@pytest.mark.parametrize("layer, bn, x", [
    (nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3), torch.randn(4, 2, 6, 6)),
    (nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), torch.randn(4, 2, 6, 6)),
    (nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3), torch.randn(4, 2, 7)),
    (nn.Linear(5, 3, bias=False), nn.BatchNorm1d(3), torch.randn(4, 5)),
    (nn.Linear(5, 3), nn.BatchNorm1d(3), torch.randn(4, 5)),
])
def test_batchnorm_folds_into_the_layer_before_it(layer, bn, x):
    torch.manual_seed(0)
    model = nn.Sequential(layer, random_batchnorm(bn, 1)).eval()
    g = polyir.export(model, x)
    assert kinds(g)[1:] == [{"Linear": "Affine"}.get(type(layer).__name__, type(layer).__name__),
                            "Output"]
    folded = g.nodes[list(g.nodes)[1]]
    assert folded.metadata["folded_batchnorm"] == f"{type(bn).__name__} 1"
    with torch.no_grad():
        want = batchnorm_reference(layer(x), bn)
        got = polyir.to_torch(g)(x)
    assert (got - want).abs().max() <= 1e-5


def test_batchnorm_without_a_layer_before_it_is_a_channel_affine():
    model = nn.Sequential(nn.ReLU(), random_batchnorm(nn.BatchNorm2d(3), 2)).eval()
    x = torch.randn(4, 3, 5, 5)
    g = polyir.export(model, x)
    assert kinds(g)[1:] == ["Activation", "ChannelAffine", "Output"]
    with torch.no_grad():
        want = batchnorm_reference(torch.relu(x), model[1])
    assert (polyir.to_torch(g)(x) - want).abs().max() <= 1e-5


def test_batchnorm_after_a_layer_read_twice_is_not_folded():
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.bn = random_batchnorm(nn.BatchNorm1d(3), 3)

        def forward(self, x):
            h = self.fc(x)
            return self.bn(h) + h

    model = Both().eval()
    g = polyir.export(model, torch.randn(2, 3))
    assert "ChannelAffine" in kinds(g) and "folded_batchnorm" not in g.nodes["fc"].metadata
    eval_equal(model, g, torch.randn(6, 3), atol=1e-5)


def test_batchnorm_without_running_statistics_is_refused():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2, track_running_stats=False))
    with pytest.raises(polyir.GraphError, match="running statistics") as exc:
        polyir.export(model, torch.randn(3, 2))
    assert "track_running_stats=True" in exc.value.fix


def test_layers_without_bias_stay_without_bias(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.Flatten(),
                          nn.Linear(18, 4, bias=False))
    g = polyir.export(model, torch.randn(1, 1, 5, 5))
    assert g.nodes["conv2d_0"].bias is None and kinds(g)[3] == "Linear"
    polyir.save(g, tmp_path / "m.h5")
    m = polyir.to_torch(polyir.load(tmp_path / "m.h5"))
    assert all(not name.endswith("bias") for name, _ in m.named_parameters())
    eval_equal(model, g, torch.randn(3, 1, 5, 5))


class Arithmetic(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        parts = [h - x, h * x, h / (x * x + 1.0), 2.0 - h, h + 0.5, h - 1.5,
                 torch.clamp(h, max=0.2), F.relu6(h * 4), F.hardtanh(h, -0.1, 0.4),
                 torch.softmax(h, 1), h.log_softmax(-1)]
        return torch.cat(parts, dim=1), torch.stack([h, x], dim=1)


def test_elementwise_arithmetic_clamp_softmax_cat_and_stack():
    torch.manual_seed(1)
    model = Arithmetic()
    x = torch.randn(2, 4)
    g = polyir.export(model, x)
    assert {"Binary", "ChannelAffine", "Clamp", "Softmax", "Concat", "Scale"} <= set(kinds(g))
    x = torch.randn(9, 4)
    with torch.no_grad():
        want, got = model(x), polyir.to_torch(g)(x)
    for w, v in zip(want, got):
        assert (w - v).abs().max() <= 1e-6
    h = model.fc(x).detach()  # spot checks against the formulas
    assert torch.allclose(got[0][:, 8:12], h / (x * x + 1.0), atol=1e-6)
    assert torch.allclose(got[0][:, 32:36], h.clamp(-0.1, 0.4))


class Pools(nn.Module):
    def forward(self, x):
        a = F.max_pool2d(x, 2)
        b = F.adaptive_avg_pool2d(x, (2, 2))
        return torch.cat([a, b], 1).mean((2, 3)), x.mean((-1, -2), keepdim=True)


def test_pooling_functions_and_spatial_means():
    model = Pools()
    g = polyir.export(model, torch.randn(1, 2, 4, 4))
    assert kinds(g).count("AdaptiveAvgPool2d") == 3 and "MaxPool2d" in kinds(g)
    x = torch.randn(5, 2, 4, 4)
    with torch.no_grad():
        got = polyir.to_torch(g)(x)
    assert torch.allclose(got[0][:, :2], F.max_pool2d(x, 2).mean((2, 3)), atol=1e-6)
    assert torch.allclose(got[1], x.mean((2, 3), keepdim=True), atol=1e-6)


def test_layer_norm_softmax_and_maxpool1d_modules():
    torch.manual_seed(2)
    model = nn.Sequential(nn.MaxPool1d(2), nn.Flatten(), nn.Linear(6, 5), nn.LayerNorm(5),
                          nn.ReLU6(), nn.LayerNorm(5, elementwise_affine=False), nn.LogSoftmax(1))
    g = polyir.export(model, torch.randn(1, 2, 6))
    assert kinds(g)[1:-1] == ["MaxPool1d", "Flatten", "Affine", "LayerNorm", "Clamp", "LayerNorm",
                              "Softmax"]
    assert g.nodes["layernorm_5"].weight is None
    eval_equal(model, g, torch.randn(7, 2, 6), atol=1e-6)


# --- refusals: what is wrong and what to do -------------------------------------------------------
@pytest.mark.parametrize("module, x", [
    (nn.LSTM(3, 4), torch.randn(2, 5, 3)),
    (nn.GRU(3, 4), torch.randn(2, 5, 3)),
    (nn.Embedding(10, 3), torch.tensor([[1, 2]])),
])
def test_recurrent_and_embedding_layers_have_no_polyir_kind(module, x):
    with pytest.raises(polyir.GraphError, match="no polyir kind") as exc:
        polyir.export(nn.Sequential(module), x)
    assert "docs/export.md" in exc.value.fix and "register" not in exc.value.fix


def test_a_module_that_computes_is_never_offered_a_skip():
    for module in (nn.PReLU(), nn.Upsample(scale_factor=2)):
        with pytest.raises(polyir.GraphError, match="no polyir form") as exc:
            polyir.export(nn.Sequential(module), torch.randn(2, 3, 4))
        assert "register a handler" in exc.value.fix and ", None)" not in exc.value.fix


def test_an_unknown_module_that_is_the_identity_may_be_skipped(registry):
    model = nn.Sequential(nn.Linear(2, 2), nn.Unflatten(1, (2,)))  # no parameters, x -> x
    with pytest.raises(polyir.GraphError, match="returned its input unchanged") as exc:
        polyir.export(model, torch.randn(2, 2))
    assert "polyir.exporters.register(Unflatten, None)" in exc.value.fix
    register(nn.Unflatten, None)  # the fix it suggests works
    g = polyir.export(model, torch.randn(2, 2))
    assert kinds(g) == ["Input", "Affine", "Output"]


class LoopOverTime(nn.Module):
    """The snnTorch / Norse style: the time loop inside forward."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.lif = pnn.LIF(tau=0.01, r=1.0, v_leak=0.0, v_threshold=0.5, dt=1e-3)

    def forward(self, xs):
        state, out = None, []
        for t in range(xs.shape[0]):
            z, state = self.lif(self.fc(xs[t]), state)
            out.append(z)
        return torch.stack(out)


class FixedStepsLoop(LoopOverTime):
    """The snnTorch tutorial style: a loop of constant length (fx unrolls it)."""

    def forward(self, x):
        state, out = None, []
        for _ in range(4):
            z, state = self.lif(self.fc(x), state)
            out.append(z)
        return torch.stack(out)


class FixedStepsOverSequence(LoopOverTime):
    def forward(self, xs):
        state, out = None, []
        for t in range(4):
            z, state = self.lif(self.fc(xs[t]), state)
            out.append(z)
        return torch.stack(out)


@pytest.mark.parametrize("model, x", [(LoopOverTime(), torch.randn(5, 2, 3)),
                                      (FixedStepsLoop(), torch.randn(2, 3)),
                                      (FixedStepsOverSequence(), torch.randn(4, 2, 3))])
def test_a_time_loop_in_forward_asks_for_the_one_step_module(model, x):
    with pytest.raises(polyir.GraphError, match="loops") as exc:
        polyir.export(model, x)
    assert "export the one-step module (forward(x, state) -> (y, state))" in exc.value.fix
    assert "def forward(self, x, state=None)" in exc.value.fix  # with an example


def test_torchlogix_layers_without_a_polyir_kind_say_so():
    L = torchlogix_layers()
    if not hasattr(L, "LogicConvTranspose2d"):
        pytest.skip("torchlogix < 0.2 has no LogicConvTranspose2d")
    layer = L.LogicConvTranspose2d(in_dim=2, channels=1, num_kernels=2, tree_depth=1,
                                   receptive_field_size=2)
    with pytest.raises(polyir.GraphError, match="torchlogix.s LogicConvTranspose2d has no polyir kind") as exc:
        polyir.export(nn.Sequential(layer), (torch.rand(1, 1, 2, 2) > 0.5).float())
    assert "LogicConv2d" in exc.value.fix and "cannot trace" not in str(exc.value)


# --- training through exported models -------------------------------------------------------------
def test_difflogic_grad_factor_is_carried_and_honoured(tmp_path):
    model = nn.Sequential(LogicLayer(6, 12, 0, grad_factor=2.0),
                          LogicLayer(12, 8, 1, grad_factor=2.0), GroupSum(2, 1.0))
    x = (torch.rand(16, 6, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    g = polyir.export(model, x)
    assert g.nodes["logiclayer_0"].metadata["grad_factor"] == 2.0
    polyir.save(g, tmp_path / "m.h5")
    imported = polyir.to_torch(polyir.load(tmp_path / "m.h5")).train()
    model.train()
    for m in (model, imported):
        m.zero_grad()
        m(x).square().sum().backward()
    want = model[0].weights.grad
    got = imported.layer("logiclayer_0").logits.grad
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    # the second layer's factor doubles what reaches the first: without it, half the gradient
    model[1].grad_factor = 1.0
    model.zero_grad()
    model(x).square().sum().backward()
    assert torch.allclose(2 * model[0].weights.grad, want, rtol=1e-5, atol=1e-7)


def test_binarize_straight_through_trains_an_mlp_with_a_logic_head(tmp_path):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), pnn.Binarize(torch.tensor([0.0]), straight_through=True),
                          pnn.LogicLayer(6, 16, seed=0), pnn.GroupSum(2, 2.0))
    x = torch.randn(32, 4)
    model(x).sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    g = polyir.export(model, x[:2])
    assert type(g.nodes["binarize_1"]).__name__ == "Binarize"
    assert g.nodes["binarize_1"].metadata["straight_through"] is True
    imported = polyir.to_torch(g).train()
    imported(x).sum().backward()
    assert imported.layer("linear_0").weight.grad.abs().sum() > 0
    eval_equal(model, g, x)


def test_neuron_time_constants_stay_fixed_and_finite_under_adam():
    torch.manual_seed(4)
    lif = pnn.LIF(tau=np.full(4, 2e-3, np.float32), r=1.0, v_leak=0.0, v_threshold=0.3, dt=1e-3)
    assert not lif.tau.requires_grad and lif.r.requires_grad
    model = nn.Sequential(nn.Linear(3, 4))
    opt = torch.optim.Adam(list(model.parameters()) + list(lif.parameters()), lr=1e-2)
    xs, target = torch.randn(10, 8, 3), torch.rand(10, 8, 4)
    for _ in range(5):
        state, loss = None, 0
        for t in range(10):
            z, state = lif(model(xs[t]), state)
            loss = loss + (z - target[t]).square().mean() + state.v.square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert torch.all(lif.tau == 2e-3)
