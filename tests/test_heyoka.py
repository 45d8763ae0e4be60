"""heyoka importer and backend: MLPs as heyoka.model.ffnn, node-by-node expressions, relaxed logic,
parameters and their map, refusals. References are written here (torch float64 forward passes,
numpy formulas), never taken from polyir. ODE systems and ODE programs: test_heyoka_ode.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import polyir
from polyir import ir
from polyir.importers.heyoka import to_heyoka
from polyir.ir.patterns import find_ffnn_chains

hy = pytest.importorskip("heyoka")


def heyoka_compile(graph, **options):
    return polyir.compile(graph, "heyoka", **options)


TORCH_ACT = {
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "identity": lambda x: x,
    "leaky_relu": lambda x: torch.nn.functional.leaky_relu(x, 0.1),
    "elu": lambda x: torch.nn.functional.elu(x, 0.7), "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu, "hardtanh": lambda x: torch.nn.functional.hardtanh(x, -2, 2),
    "exp": torch.exp, "softplus": lambda x: torch.nn.functional.softplus(x, beta=1.5),
}


ALPHA = {"leaky_relu": 0.1, "elu": 0.7, "hardtanh": 2.0, "softplus": 1.5}


def torch_mlp(sizes, acts, seed):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(a, b, dtype=torch.float64) for a, b in zip(sizes, sizes[1:])]
    return layers, acts


def torch_forward(layers, acts, x):
    h = torch.from_numpy(x)
    with torch.no_grad():
        for layer, act in zip(layers, acts):
            h = TORCH_ACT[act](layer(h))
    return h.numpy()


def graph_of(layers, acts):
    """The Graph a user (or polyir.export) would write for the torch MLP."""
    nodes = []
    for layer, act in zip(layers, acts):
        nodes.append(ir.Affine(layer.weight.detach().numpy().copy(),
                               layer.bias.detach().numpy().copy()))
        if act != "identity":
            nodes.append(ir.Activation(act, ALPHA.get(act)))
    return ir.Graph.sequential(*nodes)


def test_heyoka_ffnn_weight_order():
    """heyoka's nn_wb order, checked against heyoka itself: all weight matrices (each (out, in)
    row-major, layer by layer), then all biases."""
    x = hy.make_vars("x0", "x1", "x2")
    rng = np.random.default_rng(1)
    wb = rng.normal(size=3 * 4 + 4 * 2 + 4 + 2)
    out = hy.model.ffnn(list(x), [4], 2, [hy.tanh, lambda e: e], list(wb))
    cf = hy.cfunc(out, list(x))
    pts = rng.normal(size=(3, 50))
    w1, w2 = wb[:12].reshape(4, 3), wb[12:20].reshape(2, 4)
    b1, b2 = wb[20:24], wb[24:26]
    ref = w2 @ np.tanh(w1 @ pts + b1[:, None]) + b2[:, None]
    np.testing.assert_allclose(cf(pts), ref, rtol=0, atol=1e-13)


MLPS = [("tanh", "tanh", "sigmoid"), ("relu", "relu", "identity"),
        ("leaky_relu", "leaky_relu", "identity")]


TORCH_MODULE = {"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU,
                "leaky_relu": lambda: torch.nn.LeakyReLU(0.1), "identity": torch.nn.Identity}


@pytest.mark.parametrize("acts", MLPS, ids=["-".join(a) for a in MLPS])
def test_mlp_equals_torch(acts):
    layers, acts = torch_mlp([4, 32, 32, 1], acts, seed=0)
    model = torch.nn.Sequential(*[m for lay, a in zip(layers, acts)
                                  for m in (lay, TORCH_MODULE[a]())])
    g = polyir.export(model, torch.zeros(1, 4, dtype=torch.float64))
    assert [c.nodes for c in find_ffnn_chains(g)] and len(find_ffnn_chains(g)) == 1
    x = np.random.default_rng(2).normal(scale=2.0, size=(10_000, 4))
    ref = torch_forward(layers, acts, x)
    prog = heyoka_compile(g)
    y = prog(x)
    assert y.shape == (10_000, 1)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-13)
    # node by node: the same function
    y2 = heyoka_compile(g, ffnn=False, compact_mode=True)(x)
    np.testing.assert_allclose(y2, y, rtol=0, atol=1e-13)


def test_mlp_is_exactly_heyoka_ffnn():
    layers, acts = torch_mlp([4, 32, 32, 1], ("tanh", "tanh", "sigmoid"), seed=3)
    g = graph_of(layers, acts)
    exprs, variables = to_heyoka(g)
    ws = [lay.weight.detach().numpy() for lay in layers]
    bs = [lay.bias.detach().numpy() for lay in layers]
    wb = [float(v) for w in ws for v in w.ravel()] + [float(v) for b in bs for v in b]
    expected = hy.model.ffnn(variables, [32, 32], 1, [hy.tanh, hy.tanh, hy.sigmoid], wb)
    assert exprs == expected
    # user-given input expressions
    mine = list(hy.make_vars("p", "q", "r", "s"))
    exprs_in, vars_in = to_heyoka(g, inputs=mine)
    assert vars_in == mine
    assert exprs_in == hy.model.ffnn(mine, [32, 32], 1, [hy.tanh, hy.tanh, hy.sigmoid], wb)
    # params: par[i] in torch's parameters() order (per layer: weight rows, then bias), whatever
    # the ffnn flag; heyoka's ffnn receives them in its own nn_wb order
    pexprs, pvars, values, par_map = to_heyoka(g, params=True)
    torch_order = np.concatenate([p.detach().numpy().ravel() for lay in layers
                                  for p in lay.parameters()])
    np.testing.assert_array_equal(values, torch_order)
    names = [n for n, k in g.nodes.items() if isinstance(k, ir.Affine)]
    starts = np.cumsum([0] + [p.numel() for lay in layers for p in lay.parameters()])
    for layer_no, name in enumerate(names):
        w0, b0 = starts[2 * layer_no], starts[2 * layer_no + 1]
        assert par_map[w0] == (name, "weight", 0) and par_map[b0] == (name, "bias", 0)
    w_idx = [i for lay_no in range(3) for i in range(starts[2 * lay_no], starts[2 * lay_no + 1])]
    b_idx = [i for lay_no in range(3) for i in range(starts[2 * lay_no + 1],
                                                      starts[2 * lay_no + 2])]
    assert pexprs == hy.model.ffnn(pvars, [32, 32], 1, [hy.tanh, hy.tanh, hy.sigmoid],
                                   [hy.par[i] for i in w_idx + b_idx])
    # node-by-node with params: the same order and map, the same values through the pars
    nexprs, nvars, nvalues, nmap = to_heyoka(g, params=True, ffnn=False)
    np.testing.assert_array_equal(nvalues, values)
    assert nmap == par_map
    pts = np.random.default_rng(4).normal(size=(4, 100))
    a = hy.cfunc(pexprs, pvars)(pts, pars=np.repeat(values[:, None], 100, 1))
    b = hy.cfunc(nexprs, nvars, compact_mode=True)(pts, pars=np.repeat(nvalues[:, None], 100, 1))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    np.testing.assert_allclose(a.T, torch_forward(layers, acts, pts.T.copy()), rtol=0, atol=1e-13)


def test_params_without_bias_and_write_back():
    """Linear layers (no bias) get no parameters: as many pars as torch has; trained values
    written back reach the Graph and the to_torch module (checked against heyoka's own cfunc
    evaluated with those pars)."""
    torch.manual_seed(12)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5, bias=False), torch.nn.Tanh(),
                                torch.nn.Linear(5, 2)).double()
    g = polyir.export(model, torch.zeros(1, 3, dtype=torch.float64))
    exprs, xs, values, par_map = to_heyoka(g, params=True)
    assert len(values) == sum(p.numel() for p in model.parameters()) == 15 + 12
    assert {f for _, f, _ in par_map.values()} == {"weight", "bias"}
    trained = values + np.random.default_rng(13).normal(scale=0.1, size=values.shape)
    pts = np.random.default_rng(14).normal(size=(3, 20))
    ref = hy.cfunc(exprs, xs)(pts, pars=np.repeat(trained[:, None], 20, 1)).T
    from polyir.importers.heyoka_params import write_params
    g2 = write_params(g, trained, par_map)
    assert g2 is not g and np.array_equal(to_heyoka(g, params=True)[2], values)  # g unchanged
    np.testing.assert_array_equal(to_heyoka(g2, params=True)[2], trained)
    m = polyir.to_torch(g)
    assert write_params(m, trained, par_map) is m
    with torch.no_grad():
        np.testing.assert_allclose(m(torch.from_numpy(pts.T.copy())).numpy(), ref, atol=1e-13)
        np.testing.assert_allclose(polyir.to_torch(g2)(torch.from_numpy(pts.T.copy())).numpy(),
                                   ref, atol=1e-13)
    with pytest.raises(polyir.GraphError, match="par_map reaches"):
        write_params(g, trained[:5], par_map)


def test_chain_finder_stops_at_fan_out():
    rng = np.random.default_rng(0)
    g = ir.Graph()
    g.add("x", ir.Input((3,)))
    g.add("pre", ir.Activation("tanh"))           # before the first dense layer: not in a chain
    g.add("a1", ir.Affine(rng.normal(size=(5, 3)), np.zeros(5)))
    g.add("t1", ir.Activation("tanh"))
    g.add("a2", ir.Linear(rng.normal(size=(4, 5))))
    g.add("s2", ir.Activation("sigmoid"))
    g.add("a3", ir.Affine(rng.normal(size=(2, 4)), np.zeros(2)))   # s2 fans out to a3 and y2
    g.add("y1", ir.Output((2,)))
    g.add("y2", ir.Output((4,)))
    for e in [("x", "pre"), ("pre", "a1"), ("a1", "t1"), ("t1", "a2"), ("a2", "s2"),
              ("s2", "a3"), ("a3", "y1"), ("s2", "y2")]:
        g.connect(*e)
    chains = find_ffnn_chains(g)
    assert [c.nodes for c in chains] == [("a1", "t1", "a2", "s2")]
    x = rng.normal(size=(20, 3))
    p1, p2 = heyoka_compile(g), heyoka_compile(g, ffnn=False)
    h = np.tanh(x)
    h = 1 / (1 + np.exp(-(np.tanh(h @ g.nodes["a1"].weight.T) @ g.nodes["a2"].weight.T)))
    for p in (p1, p2):
        y1, y2 = p(x)
        np.testing.assert_allclose(y2, h, atol=1e-14)
        np.testing.assert_allclose(y1, h @ g.nodes["a3"].weight.T, atol=1e-14)


def test_activations_equal_torch():
    fns = sorted(ir.ACTIVATIONS)
    g = ir.Graph()
    g.add("x", ir.Input((1,)))
    for f in fns:
        g.add(f, ir.Activation(f, ALPHA.get(f)))
        g.add("y_" + f, ir.Output((1,)))
        g.connect("x", f)
        g.connect(f, "y_" + f)
    x = np.concatenate([np.linspace(-30, 30, 2001), [0.0, -1e-300, 1e-300, 2.0, -2.0]])[:, None]
    outs = heyoka_compile(g, dtype="float64")(x)
    xt = torch.from_numpy(x)
    for f, y in zip(fns, outs):
        ref = TORCH_ACT[f](xt).numpy()  # softplus too: x above beta x > 20 on every backend
        np.testing.assert_allclose(y, ref, rtol=1e-14, atol=1e-14, err_msg=f)


# --- relaxed logic ---------------------------------------------------------------------------
# The 16 relaxed gates in difflogic's order, written out.


RELAXED = [lambda a, b: 0 * a, lambda a, b: a * b, lambda a, b: a - a * b, lambda a, b: a,
           lambda a, b: b - a * b, lambda a, b: b, lambda a, b: a + b - 2 * a * b,
           lambda a, b: a + b - a * b, lambda a, b: 1 - (a + b - a * b),
           lambda a, b: 1 - (a + b - 2 * a * b), lambda a, b: 1 - b,
           lambda a, b: 1 - b + a * b, lambda a, b: 1 - a, lambda a, b: 1 - a + a * b,
           lambda a, b: 1 - a * b, lambda a, b: 1 + 0 * a]


def relaxed_layer(x, a, b, logits):
    p = torch.softmax(torch.tensor(logits), dim=-1).numpy()
    xa, xb = x[:, a], x[:, b]
    return sum(p[:, g] * RELAXED[g](xa, xb) for g in range(16))


def logic_graph(rng, n_in=8, widths=(16, 12), k=3, tau=2.0):
    nodes, prev = [], n_in
    params = []
    for w in widths:
        a, b = rng.integers(0, prev, w), rng.integers(0, prev, w)
        logits = rng.normal(scale=2.0, size=(w, 16))
        nodes.append(ir.LogicLayer(a, b, logits.argmax(-1), logits))
        params.append((a, b, logits))
        prev = w
    nodes.append(ir.GroupSum(k, tau=tau))
    return ir.Graph.sequential(*nodes, input_shape=(n_in,), input_elem="bit"), params


def test_relaxed_logic_train_mode():
    rng = np.random.default_rng(5)
    g, params = logic_graph(rng)
    x = rng.uniform(size=(2000, 8))
    h = x
    for a, b, logits in params:
        h = relaxed_layer(h, a, b, logits)
    ref = h.reshape(len(x), 3, -1).sum(-1) / 2.0
    y = heyoka_compile(g, mode="train")(x)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)
    # and polyir's torch module in train mode (checked against the same formula elsewhere)
    m = polyir.to_torch(g).train()
    with torch.no_grad():
        np.testing.assert_allclose(m(torch.from_numpy(x)).numpy(), y, rtol=0, atol=1e-12)


def test_logic_eval_mode_truth_tables():
    rng = np.random.default_rng(6)
    g, params = logic_graph(rng, n_in=6, widths=(32,), k=1, tau=1.0)
    g2 = ir.Graph.sequential(g.nodes["logiclayer"], input_shape=(6,), input_elem="bit")
    x = rng.integers(0, 2, size=(500, 6)).astype(np.float64)
    a, b, logits = params[0]
    gates = logits.argmax(-1)
    # difflogic id = 4-bit number G(0,0) G(0,1) G(1,0) G(1,1), high bit first
    xa, xb = x[:, a].astype(int), x[:, b].astype(int)
    ref = (gates[None, :] >> (3 - (2 * xa + xb))) & 1
    np.testing.assert_array_equal(heyoka_compile(g2)(x), ref)


def tree_reference(x, leaves, gate_fns, kernel, stride, pad):
    """numpy LogicTree2d: x (B, C, H, W); gate_fns[k][i](a, b) per kernel and gate."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (x.shape[2] + 2 * pad[0] - kernel[0]) // stride[0] + 1
    ow = (x.shape[3] + 2 * pad[1] - kernel[1]) // stride[1] + 1
    out = np.zeros((x.shape[0], len(leaves), oh, ow))
    for k in range(len(leaves)):
        for oy in range(oh):
            for ox in range(ow):
                vals = [xp[:, c, oy * stride[0] + dy, ox * stride[1] + dx]
                        for c, dy, dx in leaves[k]]
                gi = 0
                while len(vals) > 1:
                    nxt = []
                    for i in range(len(vals) // 2):
                        nxt.append(gate_fns[k][gi](vals[2 * i], vals[2 * i + 1]))
                        gi += 1
                    vals = nxt
                out[:, k, oy, ox] = vals[0]
    return out


def test_logic_conv_eval_and_train():
    from families import family_graphs
    # LogicTree2d -> OrPool2d -> Flatten -> LogicLayer -> GroupSum
    g = family_graphs()["logic_conv"]
    n = g.nodes
    rng = np.random.default_rng(12)
    x = rng.integers(0, 2, size=(64, 2, 8, 8)).astype(np.float64)
    tree, pool, logic, gs = n["logictree2d"], n["orpool2d"], n["logiclayer"], n["groupsum"]
    truth = [[(lambda g: lambda a, b: (g >> (3 - (2 * a.astype(int) + b.astype(int)))) & 1)(int(q))
              for q in row] for row in tree.gates]
    h = tree_reference(x, tree.leaves, truth, tree.kernel_size, tree.stride, tree.padding)
    h = h.reshape(64, 4, 3, 2, 3, 2).max(axis=(3, 5)).reshape(64, -1)   # 6x6 -> 3x3, 2x2 windows
    a, b = h[:, logic.a].astype(int), h[:, logic.b].astype(int)
    h = (logic.gate.astype(int)[None] >> (3 - (2 * a + b))) & 1
    ref = h.reshape(64, gs.k, -1).sum(-1) / gs.tau
    np.testing.assert_array_equal(heyoka_compile(g)(x), ref)
    # train mode: a relaxed tree with logits, against the softmax-mixed formula
    logits = rng.normal(size=(3, 3, 16))
    tree2 = ir.LogicTree2d(rng.integers(0, 2, (3, 4, 3)) * np.array([1, 1, 1]), logits.argmax(-1),
                           (2, 2), stride=(1, 1), padding=(1, 1), logits=logits)
    g2 = ir.Graph.sequential(tree2, input_shape=(2, 3, 3), input_elem="bit")
    xr = rng.uniform(size=(16, 2, 3, 3))
    p = torch.softmax(torch.tensor(logits), -1).numpy()
    mixed = [[(lambda w: lambda a, b: sum(w[q] * RELAXED[q](a, b) for q in range(16)))(p[k, i])
              for i in range(3)] for k in range(3)]
    ref2 = tree_reference(xr, tree2.leaves, mixed, (2, 2), (1, 1), (1, 1))
    np.testing.assert_allclose(heyoka_compile(g2, mode="train")(xr), ref2, rtol=0, atol=1e-12)


def test_no_smooth_form_refused():
    rng = np.random.default_rng(0)
    g = ir.Graph.sequential(ir.Affine(rng.normal(size=(3, 2)), np.zeros(3)),
                            ir.Threshold(np.zeros(3)))
    with pytest.raises(polyir.GraphError, match="threshold.*no smooth") as e:
        to_heyoka(g)
    assert e.value.node == "threshold"
    g = ir.Graph.sequential(ir.Binarize(np.array([0.5])), ir.LogicLayer([0], [0], [1]),
                            input_shape=(1,))
    with pytest.raises(polyir.GraphError, match="Binarize") as e:
        to_heyoka(g)
    assert e.value.node == "binarize"
    lif = ir.LIF(tau=np.ones(1), r=np.ones(1), v_leak=np.zeros(1), v_threshold=np.ones(1))
    with pytest.raises(polyir.GraphError, match="to_heyoka_ode"):
        to_heyoka(ir.Graph.sequential(lif))


# --- leaky integrators ------------------------------------------------------------------------


def test_program_interface(nir_data):
    layers, acts = torch_mlp([3, 8, 2], ("tanh", "identity"), seed=9)
    g = graph_of(layers, acts)
    x = np.random.default_rng(10).normal(size=(257, 3))
    ref = torch_forward(layers, acts, x)
    p32 = polyir.compile(g, "heyoka", dtype="float32")
    y = p32(x.astype(np.float32))
    assert y.dtype == np.float32 and y.shape == (257, 2)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    p64 = polyir.compile(g, "heyoka")
    assert p64.backend == "heyoka" and "tanh" in p64.source
    np.testing.assert_allclose(p64(torch.from_numpy(x)), ref, rtol=0, atol=1e-14)
    seq = p64.run(x.reshape(257, 1, 3))  # stateless: T x batch as one batch
    np.testing.assert_allclose(seq[:, 0], ref, rtol=0, atol=1e-14)
    with pytest.raises(polyir.GraphError, match="expected"):
        p64(np.zeros((4, 5)))
    # a stateful graph runs as an ODE: lif_norse's spikes land in the steps of the exact solution
    lif = polyir.compile(polyir.load(nir_data / "lif_norse.nir"), "heyoka", dt=1e-4)
    data = np.loadtxt(nir_data / "lif_exact.csv", delimiter=",")
    z = lif.run(data[:, :1, None])
    assert z.shape == (1000, 1, 1)
    np.testing.assert_array_equal(np.nonzero(z[:, 0, 0])[0], np.nonzero(data[:, 2])[0])
    assert len(lif.last_run.spikes[0]) == 4


def test_cli_prints_expressions(tmp_path, capsys, nir_data):
    from polyir.cli import main
    layers, acts = torch_mlp([2, 3, 1], ("tanh", "sigmoid"), seed=11)
    path = tmp_path / "mlp.h5"
    polyir.save(graph_of(layers, acts), path)
    assert main(["heyoka", str(path)]) == 0
    out = capsys.readouterr().out
    assert "inputs: x0, x1" in out and "y[0] = sigmoid(" in out and "tanh(" in out
    assert main(["heyoka", str(nir_data / "lif_norse.nir"), "--ode"]) == 0
    out = capsys.readouterr().out
    assert "crosses v_threshold" in out and "par[0..0]" in out
    assert main(["heyoka", str(nir_data / "lif_norse.nir")]) == 1


def test_refusals_suggest_paths_that_work():
    delay = ir.Graph.sequential(ir.Delay(np.array([1e-3])), input_shape=(1,))
    for build in (polyir.to_heyoka, polyir.to_heyoka_ode):
        with pytest.raises(polyir.GraphError) as info:
            build(delay)
        msg = str(info.value)
        assert "to_heyoka_ode" not in msg.split("fix")[-1] and "polyir.to_torch" in msg
    polyir.to_torch(delay, dt=1e-3)  # the suggested path builds
    conv = ir.Graph.sequential(ir.Conv2d((4, 4), np.ones((1, 1, 2, 2)), bias=np.zeros(1)),
                               input_shape=(1, 4, 4))
    with pytest.raises(polyir.GraphError, match="polyir.to_torch") as info:
        polyir.to_heyoka(conv)
    assert "remove" not in str(info.value)
    polyir.to_torch(conv)


def test_neural_ode_example_trains_and_saves(tmp_path):
    """examples/neural_ode_heyoka.py: var_ode_sys gradients equal central finite differences of
    the trajectory loss, a few Adam steps lower it, and the trained pars land in the saved .h5
    (read back through the torch module, whose parameters torch lists in par order)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "examples" / "neural_ode_heyoka.py"
    spec = importlib.util.spec_from_file_location("neural_ode_heyoka", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    traj = ex.Trajectory(ex.initial_graph())
    p0, target = traj.ode.par_values.copy(), ex.samples()
    _, grad = traj.loss_and_grad(p0, target)
    for j in (0, 7, len(p0) - 1):
        e = np.zeros_like(p0)
        e[j] = 1e-6
        fd = (traj.loss_and_grad(p0 + e, target)[0] - traj.loss_and_grad(p0 - e, target)[0]) / 2e-6
        assert abs(fd - grad[j]) <= 1e-5 * max(1.0, abs(fd))
    out = tmp_path / "node.h5"
    losses, diff, params = ex.main(["--steps", "15", "--out", str(out)])
    assert losses[-1] < 0.5 * losses[0] and diff < 1e-12
    module = polyir.to_torch(polyir.load(out))
    saved = np.concatenate([p.detach().numpy().ravel() for p in module.parameters()])
    np.testing.assert_allclose(saved, params, rtol=0, atol=0)
