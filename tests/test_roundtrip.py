"""The torch round trip: train a model a few steps, export, save, load, to_torch; the imported
module gives the same eval outputs (torch.equal on logic graphs, 1e-6 on float32) and trains
further (its loss falls). Also: a real torchlogix model, nirtorch with polyir's maps, and the
`polyir convert` command."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import polyir
import polyir.nn as pnn
from polyir.cli import main as cli
from models import RecurrentSNN
from torchlogix_layers import load as torchlogix_load


def fit(model, step_loss, steps, lr, weights_only=False):
    """Adam for `steps` steps in train mode; returns the losses. weights_only: train only the
    weights and biases (not neuron time constants, whose scale is ~1e-2 s)."""
    model.train()
    params = [p for n, p in model.named_parameters()
              if not weights_only or n.endswith(("weight", "bias"))]
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = step_loss(model)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def through_file(model, example, tmp_path, name):
    g = polyir.export(model, example)
    path = tmp_path / f"{name}.h5"
    polyir.save(g, path)
    back = polyir.load(path)
    assert back == g
    return back, polyir.to_torch(back)


def assert_trains_further(imported, step_loss, steps=15, lr=0.02, weights_only=False):
    assert any(p.requires_grad for p in imported.parameters())
    imported.train()
    with torch.no_grad():
        before = float(step_loss(imported))
    fit(imported, step_loss, steps, lr, weights_only)
    with torch.no_grad():
        after = float(step_loss(imported))
    assert after < before, (before, after)


def classification(n, d, classes, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g)
    w = torch.randn(d, classes, generator=g)
    return x, (x - 0.5).matmul(w).argmax(-1)


# --- the six models ------------------------------------------------------------------------------
def test_mlp(tmp_path):
    torch.manual_seed(0)
    x, y = classification(128, 4, 3, 0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
    loss = lambda m: F.cross_entropy(m(x), y)  # noqa: E731
    fit(model, loss, 20, 0.02)
    g, imported = through_file(model, x[:1], tmp_path, "mlp")
    model.eval(), imported.eval()
    with torch.no_grad():
        assert (imported(x) - model(x)).abs().max() <= 1e-6
    assert_trains_further(imported, loss)


def test_cnn(tmp_path):
    torch.manual_seed(1)
    g_ = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, 6, 6, generator=g_)
    y = (x[:, 0, :3].sum((1, 2)) > x[:, 0, 3:].sum((1, 2))).long()
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 2))
    loss = lambda m: F.cross_entropy(m(x), y)  # noqa: E731
    fit(model, loss, 15, 0.01)
    g, imported = through_file(model, x[:2], tmp_path, "cnn")
    assert [type(k).__name__ for k in g.nodes.values()] == [
        "Input", "Conv2d", "Activation", "Flatten", "Affine", "Output"]
    assert g.nodes["conv2d_0"].input_shape == (6, 6)
    model.eval(), imported.eval()
    with torch.no_grad():
        assert (imported(x) - model(x)).abs().max() <= 1e-6
    assert_trains_further(imported, loss)


def test_logic_net(tmp_path):
    torch.manual_seed(2)
    x, y = classification(256, 6, 3, 2)
    model = nn.Sequential(pnn.Binarize(torch.tensor([0.25, 0.5, 0.75])),
                          pnn.LogicLayer(18, 96, seed=0), pnn.LogicLayer(96, 96, seed=1),
                          pnn.LogicLayer(96, 48, seed=2), pnn.GroupSum(3, tau=4.0))
    loss = lambda m: F.cross_entropy(m(x), y)  # noqa: E731
    losses = fit(model, loss, 20, 0.05)
    assert losses[-1] < losses[0]
    g, imported = through_file(model, x[:1], tmp_path, "logic")
    model.eval(), imported.eval()
    with torch.no_grad():
        assert torch.equal(imported(x), model(x))
    # the relaxed state (logits) survived too: train mode agrees
    model.train(), imported.train()
    assert (imported(x) - model(x)).abs().max() <= 1e-5
    assert_trains_further(imported, loss, lr=0.05)


def test_logic_conv_net(tmp_path):
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(128, 2, 6, 6, generator=gen) > 0.5).float()
    y = (x[:, 0].sum((1, 2)) > x[:, 1].sum((1, 2))).long()
    model = nn.Sequential(pnn.LogicTree2d(2, 6, 2, 3, padding=1, seed=0), pnn.OrPool2d(2, 2),
                          nn.Flatten(), pnn.LogicLayer(54, 40, seed=1), pnn.GroupSum(2, tau=3.0))
    loss = lambda m: F.cross_entropy(m(x), y)  # noqa: E731
    fit(model, loss, 10, 0.05)
    g, imported = through_file(model, x[:1], tmp_path, "logic_conv")
    assert g.nodes["input"].elem == "bit"
    model.eval(), imported.eval()
    with torch.no_grad():
        assert torch.equal(imported(x), model(x))
    assert_trains_further(imported, loss, lr=0.05)


def recurrent_snn(n_in=3, n=8, n_out=2):
    """Affine -> CubaLIF (with a recurrent Linear from its spikes) -> Linear -> LI."""
    dt = 1e-3
    model = RecurrentSNN(
        pnn.CubaLIF(tau_syn=np.full(n, 5e-3, np.float32), tau_mem=1e-2, r=1.0, v_leak=0.0,
                    v_threshold=0.3, dt=dt),
        pnn.LI(tau=np.full(n_out, 2e-2, np.float32), r=1.0, v_leak=0.0, dt=dt),
        n_in, n, n_out, out_bias=False)
    with torch.no_grad():
        model.fc.weight.mul_(8.0)
    return model


def test_lif_net_with_recurrent_edge(tmp_path):
    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(4)
    xs = torch.rand(12, 8, 3, generator=gen)
    target = torch.linspace(0, 1, 12)[:, None, None].expand(12, 8, 2) * 0.5
    model = recurrent_snn()
    fit(model, lambda m: F.mse_loss(m.run(xs), target), 5, 0.01, weights_only=True)
    spikes = []
    with torch.no_grad():
        model.eval().run(xs, spikes)
    assert 0 < torch.stack(spikes).mean() < 0.9  # the recurrent edge carries real spikes
    g, imported = through_file(model, xs[0], tmp_path, "snn")
    assert g.order()[1] == {("lif", "rec")} and g.metadata["dt"] == 1e-3
    model.eval(), imported.eval()
    with torch.no_grad():
        assert (imported.run(xs) - model.run(xs)).abs().max() <= 1e-6
    assert_trains_further(imported, lambda m: F.mse_loss(m.run(xs), target), steps=10, lr=0.01,
                          weights_only=True)


def test_mixed_model(tmp_path):
    torch.manual_seed(5)
    x, y = classification(256, 5, 3, 5)
    model = nn.Sequential(nn.Linear(5, 24), nn.Sigmoid(), pnn.Binarize(torch.tensor([0.5])),
                          pnn.LogicLayer(24, 60, seed=0), pnn.GroupSum(3, tau=3.0))
    loss = lambda m: F.cross_entropy(m(x), y)  # noqa: E731
    fit(model, loss, 15, 0.05)
    g, imported = through_file(model, x[:1], tmp_path, "mixed")
    assert [type(k).__name__ for k in g.nodes.values()] == [
        "Input", "Affine", "Activation", "Binarize", "LogicLayer", "GroupSum", "Output"]
    model.eval(), imported.eval()
    with torch.no_grad():
        assert torch.equal(imported(x), model(x))
    assert_trains_further(imported, loss, lr=0.05)


# --- a real torchlogix model ---------------------------------------------------------------------
def test_torchlogix_model_round_trip(tmp_path):
    L = torchlogix_load()
    torch.manual_seed(6)
    x, y = classification(128, 4, 2, 6)
    th = torch.tensor([0.2, 0.4, 0.6, 0.8])
    model = nn.Sequential(L.FixedBinarization(th), nn.Flatten(), L.LogicDense(16, 64),
                          L.LogicDense(64, 32), L.GroupSum(2, tau=4.0))
    loss = lambda m: F.cross_entropy(m(x), y)  # noqa: E731
    fit(model, loss, 10, 0.05)
    g, imported = through_file(model, x[:1], tmp_path, "torchlogix")
    model.eval(), imported.eval()
    with torch.no_grad():
        assert torch.equal(imported(x), model(x))
    assert_trains_further(imported, loss, lr=0.05)


def test_torchlogix_conv_model_round_trip(tmp_path):
    L = torchlogix_load()
    torch.manual_seed(7)
    gen = torch.Generator().manual_seed(7)
    x = (torch.rand(64, 1, 6, 6, generator=gen) > 0.5).float()
    model = nn.Sequential(
        L.LogicConv2d(in_dim=6, channels=1, num_kernels=4, tree_depth=2, receptive_field_size=3,
                      padding=0, parametrization_kwargs={"weight_init": "random"}),
        L.OrPooling2d(kernel_size=2, stride=2, padding=0), nn.Flatten(),
        L.LogicDense(16, 20, parametrization_kwargs={"weight_init": "random"}), L.GroupSum(2))
    g, imported = through_file(model, x[:1], tmp_path, "torchlogix_conv")
    model.eval(), imported.eval()
    with torch.no_grad():
        assert torch.equal(imported(x), model(x))


# --- nirtorch ------------------------------------------------------------------------------------
def nir_primitive_graph():
    rng = np.random.default_rng(8)
    f32 = np.float32
    g = polyir.Graph(metadata={"dt": 1e-3})
    g.add("input", polyir.Input((3,)))
    g.add("fc", polyir.Affine(4 * rng.normal(size=(5, 3)).astype(f32),
                              rng.normal(size=5).astype(f32)))
    g.add("lif", polyir.LIF(tau=np.full(5, 1e-2, f32), r=np.ones(5, f32), v_leak=np.zeros(5, f32),
                            v_threshold=np.full(5, 0.5, f32)))
    g.add("readout", polyir.Linear(rng.normal(size=(2, 5)).astype(f32)))
    g.add("li", polyir.LI(tau=np.full(2, 2e-2, f32), r=np.ones(2, f32), v_leak=np.zeros(2, f32)))
    g.add("output", polyir.Output((2,)))
    for e in [("input", "fc"), ("fc", "lif"), ("lif", "readout"), ("readout", "li"),
              ("li", "output")]:
        g.connect(*e)
    g.check()
    return g


def test_nirtorch_with_polyir_maps_matches_to_torch():
    import nirtorch
    maps = polyir.nirtorch_maps(dt=1e-3)
    g = nir_primitive_graph()
    module = nirtorch.nir_to_torch(polyir.to_nir(g), maps["nir_to_torch"])
    ours = polyir.to_torch(g).eval()
    xs = torch.rand(15, 4, 3)
    state, ys = None, []
    with torch.no_grad():
        for t in range(len(xs)):
            y, state = module(xs[t], state)
            ys.append(y)
        want = ours.run(xs)
    assert want.abs().max() > 0
    assert (torch.stack(ys) - want).abs().max() <= 1e-6


# --- polyir convert --------------------------------------------------------------------------------
def test_convert_nir_file_to_h5(tmp_path, capsys):
    import nir
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([0.5, -1.0], np.float32)
    ng = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([3])),
                             "fc": nir.Affine(weight=w, bias=b),
                             "output": nir.Output(output_type=np.array([2]))},
                      edges=[("input", "fc"), ("fc", "output")])
    src, dst = tmp_path / "a.nir", tmp_path / "a.h5"
    nir.write(src, ng)
    assert cli(["convert", str(src), str(dst)]) == 0
    assert "a.h5" in capsys.readouterr().out
    g = polyir.load(dst)
    np.testing.assert_array_equal(g.nodes["fc"].weight, w)
    np.testing.assert_array_equal(g.nodes["fc"].bias, b)
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(polyir.to_torch(g)(torch.from_numpy(x)).numpy(),
                                   x @ w.T + b, rtol=1e-6)


def test_convert_h5_to_nir_and_back(tmp_path):
    import nir
    g = nir_primitive_graph()
    a, b, c = tmp_path / "g.h5", tmp_path / "g.nir", tmp_path / "back.h5"
    polyir.save(g, a)
    assert cli(["convert", str(a), str(b), "--json"]) == 0
    ng = nir.read(b)  # a genuine NIR file
    assert {type(n).__name__ for n in ng.nodes.values()} >= {"Affine", "LIF", "Linear", "LI"}
    assert cli(["convert", str(b), str(c)]) == 0
    back = polyir.load(c)
    xs = torch.rand(10, 2, 3)
    with torch.no_grad():
        want = polyir.to_torch(g).eval().run(xs)
        got = polyir.to_torch(back, dt=1e-3).eval().run(xs)
    assert torch.equal(got, want)


def test_convert_refuses_unknown_extensions(tmp_path, capsys):
    polyir.save(nir_primitive_graph(), tmp_path / "g.h5")
    assert cli(["convert", str(tmp_path / "g.h5"), str(tmp_path / "g.onnx")]) == 1
    assert "use .h5 (polyir) or .nir (NIR)" in capsys.readouterr().err
    assert not (tmp_path / "g.onnx").exists()


def test_demo_step_trains_and_round_trips(tmp_path):
    from polyir.cli import demo_steps
    state = {}
    assert demo_steps.train_logic_digits(str(tmp_path), state, epochs=2, width=400)
    assert (tmp_path / "logic_digits.h5").exists()
    assert isinstance(state["graph"], polyir.Graph)
    with torch.no_grad():
        acc = (state["imported"](state["x_test"]).argmax(-1) == state["y_test"]).float().mean()
    assert acc > 0.3  # ten classes: well above chance after one epoch
    assert demo_steps.run_on_c(str(tmp_path), state)  # C predicts what torch predicts
