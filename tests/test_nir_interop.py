"""to_nir / from_nir both ways, their errors, and the maps for nirtorch users."""
from __future__ import annotations

import warnings

import nir
import numpy as np
import pytest

import polyir
from polyir import ir
from families import family_graphs
from polyir.ir import GraphError

from nir_compare import assert_nir_equal
from test_h5 import NIR_ONLY, graphs_per_kind, nir_files

f32 = np.float32


def reordered(g: ir.Graph, like: ir.Graph) -> ir.Graph:
    """`g` with its nodes (recursively) in `like`'s order: nir.write stores them sorted."""
    if set(g.nodes) != set(like.nodes):
        return g
    out = ir.Graph(metadata=g.metadata)
    for name in like.nodes:
        node = g.nodes[name]
        if isinstance(node, ir.Graph) and isinstance(like.nodes[name], ir.Graph):
            node = reordered(node, like.nodes[name])
        out.add(name, node)
    for e in g.edges:
        out.connect(*e)
    return out


def nir_graphs():
    per_kind = graphs_per_kind()
    graphs = {k: per_kind[k] for k in NIR_ONLY}
    graphs["leaky_integrators"] = family_graphs()["leaky_integrators"]
    graphs["grouped_conv"] = per_kind["Conv1d_groups"]
    graphs["nonsquare_conv"] = per_kind["Conv2d_nonsquare"]
    return graphs


@pytest.mark.parametrize("name", list(nir_graphs()))
def test_to_nir_then_from_nir_is_the_identity(name):
    g = nir_graphs()[name]
    n = polyir.to_nir(g)
    assert isinstance(n, nir.NIRGraph)
    assert_nir_equal(g, n)                        # field by field, against NIR's own objects
    back = polyir.from_nir(n)
    assert back == g


@pytest.mark.parametrize("name", list(nir_graphs()))
def test_nir_write_of_to_nir_output_reloads_equal(name, tmp_path):
    g = nir_graphs()[name]
    path = str(tmp_path / "g.nir")
    nir.write(path, polyir.to_nir(g))
    assert reordered(polyir.load(path), g) == g
    if name in NIR_ONLY or name == "leaky_integrators":    # nir's own type check passes...
        assert reordered(polyir.from_nir(nir.read(path)), g) == g
    else:                                                 # ...except where nir 1.0.8 mistypes
        with pytest.raises(ValueError):
            nir.read(path)
        assert reordered(polyir.from_nir(nir.read(path, type_check=False)), g) == g


def test_conv_input_shape_is_filled_from_inferred_types():
    g = graphs_per_kind()["Conv2d_valid"]          # Conv2d(None, ...) fed (3, 5, 5)
    assert g.nodes["node"].input_shape is None
    n = polyir.to_nir(g)
    assert tuple(n.nodes["node"].input_shape) == (5, 5)
    assert n.nodes["node"].output_type["output"].tolist() == [2, 3, 3]   # NIR's own inference
    g1 = graphs_per_kind()["Conv1d"]
    assert polyir.to_nir(g1).nodes["node"].input_shape == 11
    flat = ir.Graph.sequential(ir.Flatten(start_dim=0), input_shape=(2, 3))
    assert polyir.to_nir(flat).nodes["flatten"].input_type["input"].tolist() == [2, 3]


@pytest.mark.parametrize("name", list(nir_files()))
def test_from_nir_of_nir_built_graphs(name):
    n = nir_files()[name]
    g = polyir.from_nir(n)
    assert_nir_equal(g, n)
    assert polyir.from_nir(polyir.to_nir(g)) == g


def test_from_nir_nested_and_recurrent():
    g = polyir.from_nir(nir_files()["nested"])
    assert isinstance(g.nodes["sub"], ir.Graph) and g.metadata["source"] == "test"
    g = polyir.from_nir(nir_files()["recurrent"])
    assert g.order()[1] == {("lif", "rec")}


def test_from_nir_fills_v_reset_and_w_in():
    lif = nir.LIF(np.ones(3, f32), np.ones(3, f32), np.zeros(3, f32), np.full(3, 2.0, f32))
    lif.v_reset = None                               # as a pre-1.0 node would have it
    cuba = nir.CubaLIF(np.ones(3, f32), np.ones(3, f32), np.ones(3, f32), np.zeros(3, f32),
                       np.ones(3, f32), w_in=2.5)
    cuba.v_reset = None
    g = polyir.from_nir(nir.NIRGraph.from_list(lif, cuba))
    assert g.nodes["lif"].v_reset.tolist() == [0, 0, 0]
    assert g.nodes["lif"].v_reset.dtype == np.float32
    assert g.nodes["cubalif"].w_in.tolist() == [2.5, 2.5, 2.5]
    assert g.nodes["cubalif"].v_reset.tolist() == [0, 0, 0]


def test_from_nir_metadata():
    node = nir.Scale(np.ones(2, f32), metadata={"a": {"b": 1, "c": "x"}, "lst": [1, 2],
                                               "none": None})
    with pytest.warns(polyir.PolyirWarning, match="'none'"):
        g = polyir.from_nir(nir.NIRGraph.from_list(node))
    meta = g.nodes["scale"].metadata
    assert meta["a.b"] == 1 and meta["a.c"] == "x" and meta["lst"].tolist() == [1, 2]
    assert "none" not in meta


def test_from_nir_errors_name_the_node():
    from nir.ir.graph import Identity
    ident = Identity({"input": np.array([2])})
    n = nir.NIRGraph(nodes={"x": nir.Input(np.array([2])), "id": ident,
                            "y": nir.Output(np.array([2]))},
                     edges=[("x", "id"), ("id", "y")], type_check=False)
    with pytest.raises(GraphError) as exc:
        polyir.from_nir(n)
    assert exc.value.node == "id" and "Identity" in str(exc.value)
    bad = nir.NIRGraph(nodes={"x": nir.Input(np.array([2])), "y": nir.Output(np.array([3]))},
                       edges=[("x", "y")], type_check=False)
    with pytest.raises(GraphError) as exc:
        polyir.from_nir(bad)
    assert exc.value.node == "y"
    assert polyir.from_nir(bad, check=False).nodes["y"].shape == (3,)


def test_from_nir_single_node():
    g = polyir.from_nir(nir.Affine(np.ones((2, 3), f32), np.zeros(2, f32)))
    assert list(g.nodes) == ["input", "affine", "output"]
    assert g.nodes["input"].shape == (3,)


def test_to_nir_names_nodes_without_nir_form():
    g = family_graphs()["logic"]
    with pytest.raises(GraphError) as exc:
        polyir.to_nir(g)
    msg = str(exc.value)
    assert "Binarize 'binarize' has no NIR form" in msg
    assert "LogicLayer 'logiclayer'" in msg and "GroupSum 'groupsum'" in msg   # all listed
    assert exc.value.node == "binarize"
    outer = ir.Graph.sequential(ir.Scale(np.ones(5, f32)), g, input_shape=(5,))
    with pytest.raises(GraphError) as exc:
        polyir.to_nir(outer)
    assert exc.value.node == "graph.binarize"
    with pytest.raises(GraphError) as exc:
        polyir.to_nir(family_graphs()["ffnn"])
    assert "Activation 'activation' has no NIR form" in str(exc.value)
    bits = ir.Graph.sequential(ir.Output((3,)), input_shape=(3,), input_elem="bit")
    with pytest.raises(GraphError) as exc:
        polyir.to_nir(bits)
    assert exc.value.field == "elem"
    with pytest.raises(GraphError):
        polyir.to_nir("nope")


def test_to_nir_checks_the_graph_first():
    g = ir.Graph()
    g.add("x", ir.Input((3,)))
    with pytest.raises(GraphError, match="Output"):
        polyir.to_nir(g)


def test_to_nir_keeps_metadata():
    g = family_graphs()["leaky_integrators"]
    n = polyir.to_nir(g)
    assert n.metadata == {"dt": 1e-3}
    s = ir.Graph.sequential(ir.Scale(np.ones(2, f32), metadata={"unit": "mV", "k": 2}))
    assert polyir.to_nir(s).nodes["scale"].metadata == {"unit": "mV", "k": 2}


# ------------------------------------------------------------------------------------------------
# nirtorch


torch = pytest.importorskip("torch")
nirtorch = pytest.importorskip("nirtorch")


def test_nirtorch_maps_shape():
    import polyir.nn as pnn
    maps = polyir.nirtorch_maps(dt=1e-3)
    assert set(maps) == {"nir_to_torch", "torch_to_nir"}
    for cls in (nir.Affine, nir.LIF, nir.CubaLIF, nir.LI, nir.IF, nir.I, nir.CubaLI, nir.Flatten,
                nir.SumPool2d, nir.Conv2d):
        assert cls in maps["nir_to_torch"]
    for cls in (pnn.LIF, pnn.CubaLIF, pnn.LI, pnn.IF, pnn.I, pnn.CubaLI, pnn.Scale):
        assert cls in maps["torch_to_nir"]
    lif = nir.LIF(np.ones(2, f32), np.ones(2, f32), np.zeros(2, f32), np.ones(2, f32))
    with pytest.raises(GraphError, match="dt"):
        polyir.nirtorch_maps()["nir_to_torch"][nir.LIF](lif)


def run_steps(module, xs):
    """A nirtorch GraphModule over a (T, batch, ...) sequence: module(x, state) -> (y, state)."""
    out, state = [], None
    for x in xs:
        y, state = module(x, state)
        out.append(y)
    return torch.stack(out)


def test_nirtorch_runs_lif_norse_like_polyir(nir_data):
    path = nir_data / "lif_norse.nir"
    data = np.loadtxt(nir_data / "lif_exact.csv", delimiter=",")
    xs = torch.tensor(data[:, 0], dtype=torch.float32).reshape(-1, 1, 1)
    module = nirtorch.nir_to_torch(nir.read(str(path)),
                                   polyir.nirtorch_maps(dt=1e-4)["nir_to_torch"])
    ours = polyir.to_torch(polyir.load(path), dt=1e-4)
    with torch.no_grad():
        y_nirtorch = run_steps(module, xs)
        y_polyir = torch.stack([y for y in _run_polyir(ours, xs)])
    assert torch.equal(y_nirtorch, y_polyir)
    assert int(y_nirtorch.sum()) == int(data[:, 2].sum()) == 4   # the exact solution's spikes


def _run_polyir(module, xs):
    state = None
    for x in xs:
        y, state = module(x, state=state)
        yield y


def test_nirtorch_affine_keeps_the_bias():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 4)).astype(f32), rng.normal(size=3).astype(f32)
    g = ir.Graph.sequential(ir.Affine(w, b), ir.Scale(np.full(3, 2.0, f32)))
    module = nirtorch.nir_to_torch(polyir.to_nir(g), polyir.nirtorch_maps()["nir_to_torch"])
    x = rng.normal(size=(5, 4)).astype(f32)
    with torch.no_grad():
        y, _ = module(torch.from_numpy(x))
        y_ours = polyir.to_torch(g).eval()(torch.from_numpy(x))
    expected = 2.0 * (x @ w.T + b)                 # numpy reference
    assert np.allclose(y.numpy(), expected, atol=1e-5)
    assert np.allclose(y_ours.numpy(), expected, atol=1e-5)


def test_nirtorch_flatten_keeps_the_batch_dim():
    g = ir.Graph.sequential(ir.Flatten(start_dim=0), input_shape=(2, 3))
    module = nirtorch.nir_to_torch(polyir.to_nir(g), polyir.nirtorch_maps()["nir_to_torch"])
    y, _ = module(torch.zeros(4, 2, 3))
    assert tuple(y.shape) == (4, 6)


def test_nirtorch_recurrent_cuba_net_matches_polyir():
    g = family_graphs()["leaky_integrators"]
    module = nirtorch.nir_to_torch(polyir.to_nir(g), polyir.nirtorch_maps(dt=1e-3)["nir_to_torch"])
    ours = polyir.to_torch(g)
    xs = torch.from_numpy(np.random.default_rng(2).normal(size=(30, 2, 3)).astype(f32) * 5)
    with torch.no_grad():
        a = run_steps(module, xs)
        b = torch.stack(list(_run_polyir(ours, xs)))
    assert torch.allclose(a, b, atol=1e-6)


def test_torch_to_nir_with_polyir_modules():
    import polyir.nn as pnn

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 4)
            self.lif = pnn.LIF(torch.full((4,), 0.02), torch.ones(4), torch.zeros(4),
                               torch.ones(4), dt=1e-3)
            self.scale = pnn.Scale(torch.arange(4.0))

        def forward(self, x, state=None):
            y, s = self.lif(self.fc(x), state)
            return self.scale(y), s

    net = Net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = nirtorch.torch_to_nir(net, polyir.nirtorch_maps()["torch_to_nir"],
                                  stateful_modules={pnn.LIF})
    g = polyir.from_nir(n)
    assert g.nodes["lif"].tau.tolist() == pytest.approx([0.02] * 4)
    assert np.array_equal(g.nodes["fc"].bias, net.fc.bias.detach().numpy())
    assert g.nodes["scale"].scale.tolist() == [0, 1, 2, 3]
    assert [tuple(e) for e in g.edges] == [("x", "fc"), ("fc", "lif"), ("lif", "scale"),
                                           ("scale", "output")]
