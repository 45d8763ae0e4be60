"""polyir.to_torch: the families import and run, train, switch modes, keep dtypes, check dt and
shapes, carry recurrent state; the NIR paper's files run with the expected spikes."""
import numpy as np
import pytest
import torch

import polyir
from polyir import GraphError
from families import family_graphs

FAMILIES = family_graphs()
PLAIN = [f for f in FAMILIES if f != "rules"]


def example(graph, batch=4, steps=None, seed=0):
    """Random inputs for a graph's single Input: bits for bit inputs, (T, B, ...) if steps."""
    gen = torch.Generator().manual_seed(seed)
    node = graph.nodes[graph.inputs[0]]
    shape = ((steps,) if steps else ()) + (batch,) + tuple(node.shape)
    x = torch.rand(shape, generator=gen)
    return x.round() if node.elem == "bit" else 2 * x - 1


@pytest.mark.parametrize("family", PLAIN)
def test_family_imports_and_runs(family):
    g = FAMILIES[family]
    m = polyir.to_torch(g)
    out_shape = tuple(g.nodes[g.outputs[0]].shape)
    if m.stateful:
        y = m.run(example(g, steps=6))
        assert y.shape == (6, 4) + out_shape
    else:
        y = m(example(g))
        assert y.shape == (4,) + out_shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("family", PLAIN)
def test_parameters_train_and_loss_falls(family):
    g = FAMILIES[family]
    torch.manual_seed(0)
    m = polyir.to_torch(g).train()
    params = list(m.parameters())
    assert params and all(isinstance(p, torch.nn.Parameter) for p in params)
    before = [p.detach().clone() for p in params]
    steps = 8 if m.stateful else None
    x = example(g, batch=16, steps=steps)

    def forward():
        return m.run(x) if m.stateful else m(x)

    with torch.no_grad():
        target = torch.randn_like(forward())
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = (forward() - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert any(not torch.equal(b, p) for b, p in zip(before, m.parameters()))


def test_logic_layers_follow_train_and_eval():
    g = FAMILIES["logic"]
    m = polyir.to_torch(g)
    x = example(g, batch=32)
    hard = m.eval()(x)
    # eval: group sums of bits over tau = 2 -> multiples of 0.5
    assert torch.equal(hard * 2, (hard * 2).round())
    # train: logits imported from hard gates put ~0.9993 on the gate: close but relaxed
    soft = m.train()(x)
    assert not torch.equal(soft, hard)
    assert (soft - hard).abs().max() < 0.1
    assert all(layer.training for layer in m.modules())


def test_eval_equals_a_numpy_evaluation_of_the_logic_family():
    g = FAMILIES["logic"]
    m = polyir.to_torch(g).eval()
    x = example(g, batch=50)
    from golden.cases.logic import layer_ref
    nodes = g.nodes
    th = nodes["binarize"].thresholds
    bits = (x.numpy()[:, :, None] > th).reshape(50, -1)
    l1, l2 = nodes["logiclayer"], nodes["logiclayer_1"]
    h = layer_ref(layer_ref(bits, l1.a, l1.b, l1.gate), l2.a, l2.b, l2.gate)
    want = h.reshape(50, 3, 4).sum(-1) / 2.0
    assert np.array_equal(m(x).numpy(), want.astype(np.float32))


def test_dtype_follows_the_arrays_and_to():
    g32 = FAMILIES["ffnn"]
    m = polyir.to_torch(g32)
    assert m.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in m.parameters())
    rng = np.random.default_rng(0)
    g64 = polyir.Graph.sequential(polyir.Affine(rng.normal(size=(3, 2)), np.zeros(3)),
                                  polyir.Activation("tanh"))
    m64 = polyir.to_torch(g64)
    assert all(p.dtype == torch.float64 for p in m64.parameters())
    x = torch.randn(5, 2)  # a float32 input is cast to the module's dtype
    y = m64(x)
    assert y.dtype == torch.float64
    want = np.tanh(x.double().numpy() @ g64.nodes["affine"].weight.T)
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-12)
    m.to("cpu", torch.float64)
    assert m(torch.randn(2, 4)).dtype == torch.float64
    assert polyir.to_torch(g32, dtype=torch.float64).dtype == torch.float64


def test_state_dict_round_trips_into_a_fresh_import():
    g = FAMILIES["logic_conv"]
    a = polyir.to_torch(g)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn_like(p))
    b = polyir.to_torch(g)
    b.load_state_dict(a.state_dict())
    x = example(g, batch=8)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_missing_dt_and_bad_options_are_clear_errors():
    g = FAMILIES["leaky_integrators"]
    bare = polyir.Graph(g.nodes, g.edges)  # the same graph without metadata dt
    with pytest.raises(GraphError) as err:
        polyir.to_torch(bare)
    assert err.value.field == "dt" and "dt=" in str(err.value)
    assert polyir.to_torch(bare, dt=1e-3).layer("lif").dt == 1e-3
    with pytest.raises(GraphError, match="positive"):
        polyir.to_torch(bare, dt=-1.0)
    with pytest.raises(GraphError, match="discretization"):
        polyir.to_torch(g, discretization="rk4")
    # a stateless graph needs no dt
    polyir.to_torch(FAMILIES["ffnn"])


def test_wrong_input_shapes_are_clear_errors():
    m = polyir.to_torch(FAMILIES["ffnn"])
    with pytest.raises(GraphError) as err:
        m(torch.randn(3, 5))
    assert err.value.node == "input" and "(batch, 4)" in str(err.value) and "(3, 5)" in str(err.value)
    with pytest.raises(GraphError, match="unsqueeze"):
        m(torch.randn(4))
    with pytest.raises(GraphError, match="1 input"):
        m(torch.randn(3, 4), torch.randn(3, 4))
    s = polyir.to_torch(FAMILIES["leaky_integrators"])
    with pytest.raises(GraphError, match=r"\(T, batch, 3\)"):
        s.run(torch.randn(5, 3))


def test_missing_rule_names_the_kind(monkeypatch):
    from polyir.importers.torch import torch_rule
    monkeypatch.delitem(torch_rule.rules, polyir.Activation)
    with pytest.raises(GraphError, match="Activation .*has no torch form"):
        polyir.to_torch(FAMILIES["ffnn"])


def test_recurrent_graph_carries_state_across_steps_and_calls():
    g = FAMILIES["leaky_integrators"]
    m = polyir.to_torch(g).eval()
    seq = example(g, batch=3, steps=12) * 40  # strong drive: the LIF layer spikes
    with torch.no_grad():
        full, state = m.run(seq, return_state=True)
        # stepping by hand with forward(x, state) gives the same
        s, ys = None, []
        for x in seq:
            y, s = m(x, state=s)
            ys.append(y)
        assert torch.equal(torch.stack(ys), full)
        # two halves, the state handed over, give the same
        first, mid = m.run(seq[:5], return_state=True)
        second = m.run(seq[5:], state=mid)
        assert torch.equal(torch.cat([first, second]), full)
        # the state is used: restarting from zero changes the second half
        assert not torch.equal(m.run(seq[5:]), second)
    assert set(state["nodes"]) == {"lif", "li"} and set(state["recurrent"]) == {"lif"}
    spikes = []
    m.layer("lif").register_forward_hook(lambda mod, inp, out: spikes.append(out[0]))
    with torch.no_grad():
        m.run(seq)
    spikes = torch.stack(spikes)
    assert set(spikes.unique().tolist()) == {0.0, 1.0}


def test_recurrent_edge_is_delayed_one_step():
    # x -> LI <- Scale(LI) : v_t = v_{t-1} + dt/tau (-v_{t-1} + x_t + s * v_{t-1})
    g = polyir.Graph(metadata={"dt": 0.1})
    one = np.ones(1)
    g.add("x", polyir.Input((1,)))
    g.add("li", polyir.LI(one, one, 0 * one))
    g.add("fb", polyir.Scale(0.5 * one))
    g.add("y", polyir.Output((1,)))
    for e in [("x", "li"), ("li", "fb"), ("fb", "li"), ("li", "y")]:
        g.connect(*e)
    xs = np.array([1.0, 0.0, 2.0, 0.0])
    v, prev_fb, want = 0.0, 0.0, []
    for x in xs:
        v = v + 0.1 * (-v + x + prev_fb)
        prev_fb = 0.5 * v
        want.append(v)
    y = polyir.to_torch(g).run(torch.tensor(xs).reshape(4, 1, 1))
    np.testing.assert_allclose(y.detach().numpy().ravel(), want, rtol=1e-12)


def test_lif_norse_spikes_like_the_exact_solution(nir_data):
    g = polyir.load(nir_data / "lif_norse.nir")
    table = np.loadtxt(nir_data / "lif_exact.csv", delimiter=",")
    current, exact_spikes = table[:, 0], table[:, 2]
    m = polyir.to_torch(g, dt=1e-4).eval()
    with torch.no_grad():
        z = m.run(torch.tensor(current).reshape(-1, 1, 1))
    assert exact_spikes.sum() == 4
    assert z.sum().item() == exact_spikes.sum()
    got_t, want_t = np.flatnonzero(z.numpy().ravel()), np.flatnonzero(exact_spikes)
    assert np.abs(got_t - want_t).max() <= 2  # and at nearly the same steps


@pytest.mark.parametrize("name", ["braille_noDelay_bias_zero.nir",
                                  "braille_noDelay_noBias_subtract.nir"])
def test_braille_networks_run_a_sequence(nir_data, name):
    g = polyir.load(nir_data / name)
    m = polyir.to_torch(g, dt=1e-4).eval()
    seq = (torch.rand(30, 5, 12, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    with torch.no_grad():
        y = m.run(seq)
    assert y.shape == (30, 5, 7)
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    assert m.layer("lif1.lif").tau_syn.shape == (g.nodes["lif1.lif"].tau_syn.shape[0],)


def test_nested_graph_layers_are_reachable_by_flattened_name():
    rng = np.random.default_rng(0)
    inner = polyir.Graph.sequential(polyir.Affine(rng.normal(size=(3, 2)), np.zeros(3)),
                                    polyir.Activation("relu"))
    g = polyir.Graph()
    g.add("x", polyir.Input((2,)))
    g.add("sub", inner)
    g.add("y", polyir.Output((3,)))
    g.connect("x", "sub")
    g.connect("sub", "y")
    m = polyir.to_torch(g)
    assert isinstance(m.layer("sub.affine"), torch.nn.Linear)
    x = torch.randn(4, 2, dtype=torch.float64)
    want = np.maximum(x.numpy() @ inner.nodes["affine"].weight.T, 0)
    np.testing.assert_allclose(m(x).detach().numpy(), want, rtol=1e-12)


def test_rules_family_runs_through_the_rule_layer():
    m = polyir.to_torch(FAMILIES["rules"])
    feat = (torch.randn(3, 2), torch.tensor([[0], [1], [2]]))
    edge = (None, torch.tensor([[0, 1], [1, 2], [2, 0]]))
    assert m(feat, edge).shape == (1, 1)


def test_path_argument_and_conv_same_padding(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 1, 3, 3)).astype(np.float32)
    g = polyir.Graph.sequential(polyir.Conv2d(None, w, (1, 1), "same"), input_shape=(1, 5, 5))
    polyir.save(g, tmp_path / "conv.h5")
    m = polyir.to_torch(str(tmp_path / "conv.h5"))
    assert m(torch.randn(2, 1, 5, 5)).shape == (2, 2, 5, 5)


def test_discretization_defaults_to_what_the_graph_records():
    """A graph exported from 'exact' neurons imports with 'exact' unless told otherwise."""
    import numpy as np
    import polyir
    from polyir import ir
    g = ir.Graph.sequential(ir.LI(tau=np.full(2, 1e-2), r=np.ones(2), v_leak=np.zeros(2)),
                            input_shape=(2,), metadata={"dt": 1e-3, "discretization": "exact"})
    assert polyir.to_torch(g).discretization == "exact"
    assert polyir.to_torch(g, discretization="euler").discretization == "euler"
    g.metadata.pop("discretization")
    assert polyir.to_torch(g).discretization == "euler"
