"""The .h5 file: bit-identical round trips, NIR compatibility both ways, atomic saves, and a loader
that refuses every malformed input with FormatError (crafted cases plus a fuzz test)."""
from __future__ import annotations

import dataclasses
import functools
import os
import time

import h5py
import nir
import numpy as np
import pytest

import polyir
from polyir import ir
from families import family_graphs
from polyir.ir import FormatError, GraphError, h5

from nir_compare import assert_nir_equal

f32 = np.float32


# ------------------------------------------------------------------------------------------------
# an independent structural comparison (does not use polyir's __eq__)


def assert_same_value(a, b, where):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), where
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
        assert a.tobytes() == b.tobytes(), f"{where}: values differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            assert_same_value(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_value(x, y, f"{where}[{i}]")
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            assert_same_value(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, ir.Graph):
        assert_same_graph(a, b, where)
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b)), f"{where}: {a!r} != {b!r}"


def assert_same_graph(a: ir.Graph, b: ir.Graph, where="graph"):
    assert isinstance(b, ir.Graph), where
    assert list(a.nodes) == list(b.nodes), f"{where}: node order {list(a.nodes)} != {list(b.nodes)}"
    for name in a.nodes:
        assert_same_value(a.nodes[name], b.nodes[name], f"{where}.{name}")
    assert [tuple(e) for e in a.edges] == [tuple(e) for e in b.edges], f"{where}: edges"
    assert_same_value(dict(a.metadata), dict(b.metadata), f"{where}.metadata")


def roundtrip(graph, tmp_path, name="g.h5"):
    path = tmp_path / name
    polyir.save(graph, path)
    back = polyir.load(path)
    assert_same_graph(graph, back)
    assert back == graph
    return back


# ------------------------------------------------------------------------------------------------
# one graph per kind, with non-default values, mixed dtypes and node metadata


@functools.cache
def graphs_per_kind() -> dict[str, ir.Graph]:
    """Built once per session: callers must not modify the graphs."""
    rng = np.random.default_rng(7)

    def r(*shape, dtype=f32):
        return rng.normal(size=shape).astype(dtype)

    meta = {"note": "ünïcode ✓", "count": 3, "ratio": 0.25, "flag": True,
            "arr": np.arange(4, dtype=np.int16)}

    def one(node, shape, elem="real", out=None):
        g = ir.Graph(metadata={"kind": type(node).__name__, "dt": 1e-4})
        g.add("input", ir.Input(shape, elem=elem))
        g.add("node", node)
        g.connect("input", "node")
        g.add("output", ir.Output(out or g.infer_types(strict=False)["node"].shape))
        g.connect("node", "output")
        g.check()
        return g

    logits = r(6, 16)
    logits[np.arange(6), [0, 1, 6, 7, 14, 15]] += 100.0
    tree_logits = r(2, 3, 16)
    tree_gates = tree_logits.argmax(-1)
    graphs = {
        "Affine": one(ir.Affine(r(3, 4, dtype=np.float64), r(3, dtype=np.float64),
                                metadata=meta), (4,)),
        "Linear": one(ir.Linear(r(3, 4, dtype=np.float16), metadata=meta), (4,)),
        "Scale": one(ir.Scale(r(4), metadata=meta), (4,)),
        "Threshold": one(ir.Threshold(r(4), metadata=meta), (4,)),
        "Flatten": one(ir.Flatten((2, 3, 4), 1, 2, metadata=meta), (2, 3, 4)),
        "Conv1d": one(ir.Conv1d(None, r(4, 2, 3), 2, 1, 2, 1, r(4), metadata=meta), (2, 11)),
        # NIR types a grouped conv's input as weight.shape[1] channels (groups ignored), so
        # nir.read refuses grouped convs: polyir files keep them, NIR cannot check them
        "Conv1d_groups": one(ir.Conv1d(None, r(4, 1, 3), 2, 1, 2, 2, r(4)), (2, 11)),
        "Conv1d_same": one(ir.Conv1d(11, r(4, 2, 3), 1, "same", 1, 1, r(4)), (2, 11)),
        "Conv2d": one(ir.Conv2d((7, 6), r(4, 3, 3, 3), (2, 1), (1, 0), (1, 2), 1, r(4),
                                metadata=meta), (3, 7, 6)),
        # nir 1.0.8 computes both output dims from weight.shape[2]: wrong for non-square kernels
        "Conv2d_nonsquare": one(ir.Conv2d((7, 6), r(4, 3, 3, 2), (2, 1), (1, 0), (1, 2), 1,
                                          r(4)), (3, 7, 6)),
        "Conv2d_valid": one(ir.Conv2d(None, r(2, 3, 3, 3), padding="valid"), (3, 5, 5)),
        "SumPool2d": one(ir.SumPool2d((2, 3), (2, 1), (1, 0), metadata=meta), (2, 6, 6)),
        "AvgPool2d": one(ir.AvgPool2d((2, 2), (2, 2), metadata=meta), (2, 6, 6)),
        "Delay": one(ir.Delay(np.abs(r(3)), metadata=meta), (3,)),
        "I": one(ir.I(r(3), metadata=meta), (3,)),
        "IF": one(ir.IF(r(3), r(3), r(3), metadata=meta), (3,)),
        "LI": one(ir.LI(r(3), r(3), r(3), metadata=meta), (3,)),
        "LIF": one(ir.LIF(r(3), r(3), r(3), r(3), r(3), metadata=meta), (3,)),
        "CubaLI": one(ir.CubaLI(r(3), r(3), r(3), r(3), r(3), metadata=meta), (3,)),
        "CubaLIF": one(ir.CubaLIF(r(3), r(3), r(3), r(3), r(3), r(3), r(3), metadata=meta), (3,)),
        "Activation": one(ir.Activation("softplus", 2.5, metadata=meta), (2, 3)),
        "LogicLayer": one(ir.LogicLayer(rng.integers(0, 5, 6), rng.integers(0, 5, 6),
                                        logits.argmax(-1), logits=logits, metadata=meta),
                          (5,), "bit"),
        "LogicLayer_plain": one(ir.LogicLayer([0, 1], [1, 0], [15, 0]), (2,), "bit"),
        "LogicTree2d": one(ir.LogicTree2d(np.stack([rng.integers(0, 3, (2, 4)),
                                                    rng.integers(0, 2, (2, 4)),
                                                    rng.integers(0, 3, (2, 4))], -1),
                                          tree_gates, (2, 3), (1, 2), (1, 1),
                                          logits=tree_logits, metadata=meta), (3, 5, 5), "bit"),
        "OrPool2d": one(ir.OrPool2d((3, 3), (2, 2), (1, 1), metadata=meta), (2, 5, 5), "bit"),
        "Binarize": one(ir.Binarize(np.sort(r(4, 3), -1), axis=0, metadata=meta), (4, 2)),
        "GroupSum": one(ir.GroupSum(3, 0.5, -1.5, metadata=meta), (12,), "bit"),
    }
    graphs.update({
        "Conv2d_nobias": one(ir.Conv2d(None, r(2, 3, 3, 3), metadata=meta), (3, 5, 5)),
        "ChannelAffine": one(ir.ChannelAffine(r(3), r(3), metadata=meta), (3, 2, 2)),
        "MaxPool1d": one(ir.MaxPool1d(3, 2, 1, metadata=meta), (2, 7)),
        "MaxPool2d": one(ir.MaxPool2d((2, 3), (2, 1), (1, 1), metadata=meta), (2, 6, 6)),
        "AdaptiveAvgPool2d": one(ir.AdaptiveAvgPool2d((2, 3), metadata=meta), (2, 5, 7)),
        "Clamp": one(ir.Clamp(-np.inf, 6.0, metadata=meta), (4,)),
        "Softmax": one(ir.Softmax(0, log=True, metadata=meta), (4, 2)),
        "LayerNorm": one(ir.LayerNorm((2, 3), r(2, 3), None, 1e-3, metadata=meta), (4, 2, 3)),
    })
    for kind in (ir.Concat(2, axis=1, stack=True, metadata=meta), ir.Binary("div")):
        g = ir.Graph(metadata={"kind": type(kind).__name__})
        g.add("a", ir.Input((2, 3)))
        g.add("b", ir.Input((2, 3)))
        g.add("node", kind)
        g.connect("a", "node", "input_0")
        g.connect("b", "node", "input_1")
        g.add("output", ir.Output(g.infer_types(strict=False)["node"].shape))
        g.connect("node", "output")
        g.check()
        graphs[type(kind).__name__] = g
    rules = family_graphs()["rules"]
    rs = rules.nodes["rules"]
    rules.nodes["rules"] = rs.replace(metadata=meta, fixed=("w1",))
    graphs["RuleSet"] = rules
    inner = ir.Graph.sequential(ir.Affine(r(2, 3), r(2)), ir.LIF(r(2), r(2), r(2), r(2)),
                                metadata={"inner": "yes"})
    outer = ir.Graph(metadata={"outer": 1})
    outer.add("x", ir.Input((3,), metadata=meta))
    outer.add("sub", inner)
    outer.add("rec", ir.Linear(r(3, 2)))
    outer.add("y", ir.Output((2,)))
    for e in [("x", "sub"), ("sub", "rec"), ("rec", "sub"), ("sub", "y")]:
        outer.connect(*e)
    outer.check()
    graphs["NIRGraph"] = outer
    return graphs


def test_graphs_per_kind_cover_the_registry():
    kinds = {type(n).file_type for g in graphs_per_kind().values() for n in g.nodes.values()}
    assert kinds == set(ir.KINDS)


@pytest.mark.parametrize("name", list(graphs_per_kind()))
def test_every_kind_round_trips_bit_identical(name, tmp_path):
    roundtrip(graphs_per_kind()[name], tmp_path)


@pytest.mark.parametrize("family", list(family_graphs()))
def test_family_graphs_round_trip(family, tmp_path):
    roundtrip(family_graphs()[family], tmp_path)


def test_multi_input_output_order_and_ports_round_trip(tmp_path):
    g = ir.Graph()
    g.add("z_in", ir.Input((3,)))
    g.add("a_in", ir.Input((3,)))
    g.add("sum", ir.Scale(np.ones(3, f32)))
    g.add("z_out", ir.Output((3,)))
    g.add("a_out", ir.Output((3,)))
    for e in [("z_in", "sum"), ("a_in", "sum"), ("sum", "z_out"), ("sum", "a_out")]:
        g.connect(*e)
    back = roundtrip(g, tmp_path)
    assert back.inputs == ["z_in", "a_in"] and back.outputs == ["z_out", "a_out"]


def big_logic_graph(layers=6, width=8000, seed=0):
    """Binarize -> `layers` LogicLayers of `width` gates (with logits) -> GroupSum (the same
    shape as benchmarks/h5_io.py times)."""
    rng = np.random.default_rng(seed)
    nodes = [ir.Binarize(np.linspace(0.1, 0.9, 8, dtype=f32))]
    n_in = 100 * 8
    for _ in range(layers):
        logits = rng.normal(size=(width, 16)).astype(f32)
        nodes.append(ir.LogicLayer(rng.integers(0, n_in, width), rng.integers(0, n_in, width),
                                   logits.argmax(-1), logits=logits))
        n_in = width
    nodes.append(ir.GroupSum(10, tau=30.0))
    g = ir.Graph.sequential(*nodes, input_shape=(100,))
    return ir.Graph(nodes={("l%d" % (i - 2) if k.startswith("logic") else k): n
                           for i, (k, n) in enumerate(g.nodes.items())},
                    edges=[], metadata={"gates": layers * width})


def test_large_logic_graph_round_trips(tmp_path):
    g = big_logic_graph(layers=6, width=8000, seed=3)
    names = list(g.nodes)
    for s, d in zip(names, names[1:]):
        g.connect(s, d)
    back = roundtrip(g, tmp_path)
    assert back.nodes["l5"].logits.shape == (8000, 16)
    assert back.nodes["l5"].gate.dtype == np.uint8


# ------------------------------------------------------------------------------------------------
# NIR compatibility


NIR_ONLY = [k for k, g in graphs_per_kind().items()
            if all(type(n).file_type in ir.NIR_KINDS for n in g.nodes.values())
            and k not in ("Conv1d_groups", "Conv2d_nonsquare")]   # NIR gets these wrong


def test_nir_only_list_is_complete():
    assert set(NIR_ONLY) >= {"Affine", "Linear", "Scale", "Threshold", "Flatten", "Conv1d",
                             "Conv2d", "SumPool2d", "AvgPool2d", "Delay", "I", "IF", "LI", "LIF",
                             "CubaLI", "CubaLIF", "NIRGraph", "Conv2d_valid", "Conv1d_same"}


@pytest.mark.parametrize("name", NIR_ONLY)
def test_polyir_file_of_nir_primitives_opens_with_nir_read(name, tmp_path):
    g = graphs_per_kind()[name]
    path = tmp_path / "g.nir"
    polyir.save(g, path)
    n = nir.read(str(path))
    assert_nir_equal(g, n)
    assert polyir.load(path) == g          # the inferred Conv input_shape comes back as None


def test_family_leaky_integrators_opens_with_nir_read(tmp_path):
    g = family_graphs()["leaky_integrators"]
    polyir.save(g, tmp_path / "li.nir")
    assert_nir_equal(g, nir.read(str(tmp_path / "li.nir")))


def nir_seq(*nodes):
    return nir.NIRGraph.from_list(*nodes)


def nir_files() -> dict[str, object]:
    rng = np.random.default_rng(11)

    def r(*shape):
        return rng.normal(size=shape).astype(f32)

    pools = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([2, 6, 6])),
               "sum": nir.SumPool2d(np.array([2, 2]), np.array([2, 2]), np.array([0, 0])),
               "avg": nir.AvgPool2d(np.array([3, 3]), np.array([1, 1]), np.array([1, 1])),
               "flat": nir.Flatten({"input": np.array([2, 3, 3])}, 0, -1),
               "output": nir.Output(np.array([18]))},
        edges=[("input", "sum"), ("sum", "avg"), ("avg", "flat"), ("flat", "output")])
    inner = nir_seq(nir.Affine(r(2, 3), r(2)), nir.LIF(r(2), r(2), r(2), r(2), r(2)))
    nested = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "sub": inner,
                                 "output": nir.Output(np.array([2]))},
                          edges=[("input", "sub"), ("sub", "output")],
                          metadata={"source": "test", "dt": 1e-3})
    recurrent = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([3])), "fc": nir.Affine(r(4, 3), r(4)),
               "lif": nir.CubaLIF(r(4), r(4), r(4), r(4), r(4), r(4), r(4)),
               "rec": nir.Linear(r(4, 4)), "output": nir.Output(np.array([4]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"),
               ("lif", "output")])
    return {
        "Affine": nir_seq(nir.Affine(r(3, 4), r(3))),
        "Linear": nir_seq(nir.Linear(r(3, 4))),
        "Scale": nir_seq(nir.Scale(r(4))),
        "Threshold": nir_seq(nir.Threshold(r(4))),
        "Conv1d": nir_seq(nir.Conv1d(10, r(2, 3, 3), 2, 1, 2, 1, r(2))),
        "Conv1d_same": nir_seq(nir.Conv1d(10, r(2, 3, 3), 1, "same", 1, 1, r(2))),
        "Conv2d": nir_seq(nir.Conv2d((6, 5), r(4, 1, 3, 3), (2, 1), (1, 1), 1, 1, r(4))),
        "Delay": nir_seq(nir.Delay(np.abs(r(3)))),
        "I": nir_seq(nir.I(r(3))),
        "IF": nir_seq(nir.IF(r(3), r(3), r(3))),
        "LI": nir_seq(nir.LI(r(3), r(3), r(3))),
        "LIF": nir_seq(nir.LIF(r(3), r(3), r(3), r(3), r(3))),
        "CubaLI": nir_seq(nir.CubaLI(r(3), r(3), r(3), r(3), r(3))),
        "CubaLIF": nir_seq(nir.CubaLIF(r(3), r(3), r(3), r(3), r(3), r(3), r(3))),
        "pools_flatten": pools,
        "nested": nested,
        "recurrent": recurrent,
        "metadata": nir_seq(nir.Scale(r(2), metadata={"name": "s", "gain": 2.0})),
    }


@pytest.mark.parametrize("name", list(nir_files()))
def test_every_file_nir_writes_opens_with_polyir(name, tmp_path):
    n = nir_files()[name]
    path = str(tmp_path / f"{name}.nir")
    nir.write(path, n)
    g = polyir.load(path)
    assert_nir_equal(g, nir.read(path))
    if name == "recurrent":
        assert g.order()[1] == {("lif", "rec")}
    if name == "nested":
        assert g.metadata["source"] == "test" and isinstance(g.nodes["sub"], ir.Graph)
    roundtrip(g, tmp_path, "again.h5")         # and polyir writes it back unchanged


@pytest.mark.parametrize("kind", ["LIF", "IF", "CubaLIF"])
def test_old_nir_files_without_v_reset_load(kind, tmp_path):
    path = str(tmp_path / "old.nir")
    nir.write(path, nir_files()[kind])
    with h5py.File(path, "r+") as f:
        node = f["node/nodes"][kind.lower()]
        threshold = node["v_threshold"][()]
        del node["v_reset"]
    g = polyir.load(path)
    node = g.nodes[kind.lower()]
    assert node.v_reset.dtype == threshold.dtype
    assert node.v_reset.tolist() == [0.0] * threshold.size
    assert np.array_equal(node.v_threshold, threshold)


# ------------------------------------------------------------------------------------------------
# atomic save


def test_failed_save_leaves_the_old_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "model.h5"
    polyir.save(family_graphs()["logic"], path)
    before = path.read_bytes()
    os.chmod(path, 0o640)

    def boom(group, graph, compression):
        group.create_dataset("half", data=np.zeros(10))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(h5.write, "_write_graph", boom)
    with pytest.raises(OSError, match="simulated"):
        polyir.save(family_graphs()["ffnn"], path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.h5"]            # no temporary file left behind
    monkeypatch.undo()
    polyir.save(family_graphs()["ffnn"], path)             # a good save replaces it...
    assert polyir.load(path) == family_graphs()["ffnn"]
    assert os.stat(path).st_mode & 0o777 == 0o640          # ...keeping its permissions
    assert os.listdir(tmp_path) == ["model.h5"]


def test_new_file_gets_the_umask_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        polyir.save(family_graphs()["ffnn"], tmp_path / "a.h5")
    finally:
        os.umask(umask)
    assert os.stat(tmp_path / "a.h5").st_mode & 0o777 == 0o644


def test_invalid_graph_is_not_saved(tmp_path):
    g = ir.Graph()
    g.add("x", ir.Input((3,)))
    with pytest.raises(GraphError):
        polyir.save(g, tmp_path / "bad.h5")
    with pytest.raises(GraphError):
        polyir.save("not a graph", tmp_path / "bad.h5")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# loader safety: crafted files


@pytest.fixture
def good(tmp_path):
    """A valid polyir file holding every family at once (several graphs as nested nodes? no: the
    logic family, whose kinds exercise int/uint8/float fields)."""
    path = tmp_path / "good.h5"
    polyir.save(family_graphs()["logic"], path)
    return path


def edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def refused(path, match=None, **kw):
    with pytest.raises(FormatError) as exc:
        polyir.load(path, **kw)
    if match:
        assert match in str(exc.value), str(exc.value)
    return exc.value


def test_not_hdf5(tmp_path):
    p = tmp_path / "x.h5"
    p.write_text("this is not HDF5\n" * 100)
    refused(p, "not a readable HDF5 file")
    p.write_bytes(b"")
    refused(p)
    refused(tmp_path / "missing.h5", "no such file")
    refused(tmp_path)                                         # a directory


def test_truncated_file(good):
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 600, 100):
        good.write_bytes(data[:cut])
        refused(good)


def test_unknown_kind(good):
    def f(h):
        del h["node/nodes/groupsum/type"]
        h["node/nodes/groupsum"].create_dataset("type", data="os.system",
                                                dtype=h5py.string_dtype())
    refused(edit(good, f), "unknown node kind 'os.system'")


def test_missing_field(good):
    edit(good, lambda h: h["node/nodes/logiclayer"].__delitem__("gate"))
    refused(good, "needs field 'gate'")


def test_missing_type(good):
    edit(good, lambda h: h["node/nodes/logiclayer"].__delitem__("type"))
    refused(good, "no 'type'")


def test_extra_field(good):
    edit(good, lambda h: h["node/nodes/logiclayer"].create_dataset("payload", data=[1, 2]))
    refused(good, "unexpected field(s) ['payload']")


def test_extra_graph_entry(good):
    edit(good, lambda h: h["node"].create_dataset("hidden", data=1))
    refused(good, "unexpected entries")


def replace(path, where, **kw):
    def f(h):
        parent, name = where.rsplit("/", 1)
        del h[where]
        h[parent].create_dataset(name, **kw)
    return edit(path, f)


def test_string_where_float(good):
    replace(good, "node/nodes/binarize/thresholds", data="0.5", dtype=h5py.string_dtype())
    refused(good, "dtype")


def test_float_gate(good):
    with h5py.File(good, "r") as h:
        gates = h["node/nodes/logiclayer/gate"][()]
    replace(good, "node/nodes/logiclayer/gate", data=gates.astype(np.float32))
    refused(good, "expected integer")


def test_gate_out_of_range_in_file(good):
    with h5py.File(good, "r") as h:
        gates = h["node/nodes/logiclayer/gate"][()]
    gates[0] = 16
    replace(good, "node/nodes/logiclayer/gate", data=gates)
    refused(good, "0..15")


def test_disallowed_dtypes(good):
    replace(good, "node/nodes/groupsum/tau", data=np.complex64(1))
    refused(good, "not allowed")
    replace(good, "node/nodes/groupsum/tau", data=np.array([(1, 2.0)], "i4,f4"))
    refused(good, "not allowed")


def test_wrong_shape(good):
    replace(good, "node/nodes/logiclayer/a", data=np.zeros((2, 12), np.int64))
    refused(good, "dimension")


def test_index_out_of_range_in_file(good):
    with h5py.File(good, "r") as h:
        a = h["node/nodes/logiclayer_1/a"][()]
    a[0] = 10_000
    replace(good, "node/nodes/logiclayer_1/a", data=a)
    refused(good, "out of range")


def test_edge_to_missing_node(good):
    def f(h):
        edges = h["node/edges"][()].astype(object)
        edges[1, 1] = b"ghost"
        del h["node/edges"]
        h["node"].create_dataset("edges", data=edges, dtype=h5py.string_dtype())
    refused(edit(good, f), "'ghost'")


def test_bad_edges_table(good):
    replace(good, "node/edges", data=np.array([["a", "b", "c"]], dtype=object),
            dtype=h5py.string_dtype())
    refused(good, "(E, 2)")
    replace(good, "node/edges", data=np.zeros((3, 2)))
    refused(good, "strings")


def test_newer_major_format(good):
    replace(good, "polyir/format", data="2.0.0", dtype=h5py.string_dtype())
    refused(good, "newer")
    replace(good, "polyir/format", data="1.7.3", dtype=h5py.string_dtype())
    assert polyir.load(good) == family_graphs()["logic"]      # a newer minor version is read
    replace(good, "polyir/format", data="one", dtype=h5py.string_dtype())
    refused(good, "not a version")


def test_soft_and_external_links(good, tmp_path):
    def soft(h):
        del h["node/nodes/groupsum/tau"]
        h["node/nodes/groupsum/tau"] = h5py.SoftLink("/node/nodes/groupsum/k")
    refused(edit(good, soft), "SoftLink")
    other = tmp_path / "other.h5"
    polyir.save(family_graphs()["logic"], other)
    polyir.save(family_graphs()["logic"], good)

    def external(h):
        del h["node/nodes/logiclayer"]
        h["node/nodes/logiclayer"] = h5py.ExternalLink(str(other), "/node/nodes/logiclayer")
    refused(edit(good, external), "ExternalLink")


def test_terabyte_dataset_is_refused_at_once(good):
    def f(h):
        del h["node/nodes/binarize/thresholds"]
        h["node/nodes/binarize"].create_dataset("thresholds", shape=(2**38,), dtype=np.float32,
                                                chunks=(2**16,), compression="gzip")
    edit(good, f)
    assert good.stat().st_size < 1 << 20
    t0 = time.perf_counter()
    refused(good, "declares 1,099,511,627,776 bytes")
    assert time.perf_counter() - t0 < 5.0


def test_unwritten_or_bomb_datasets_are_refused(good):
    # 64 MB declared, nothing stored (every read would return the fill value)
    def f(h):
        del h["node/nodes/binarize/thresholds"]
        h["node/nodes/binarize"].create_dataset("thresholds", shape=(1 << 24,), dtype=np.float32,
                                                chunks=(1 << 16,), fillvalue=0.5)
    refused(edit(good, f), "stores only")
    # a 1 GB zero array compresses ~1000x: refused by the per-array limit passed to load
    refused(good, "over the limit", max_array_bytes=1 << 20)


def test_limits_are_configurable(tmp_path):
    g = family_graphs()["ffnn"]
    polyir.save(g, tmp_path / "g.h5")
    refused(tmp_path / "g.h5", "over the limit", max_array_bytes=64)
    refused(tmp_path / "g.h5", "in total", max_total_bytes=200)


def test_group_and_dataset_confusion(good):
    def f(h):
        del h["node/nodes/groupsum"]
        h["node/nodes"].create_dataset("groupsum", data=1)
    refused(edit(good, f), "must be a group")
    polyir.save(family_graphs()["logic"], good)
    replace(good, "node/nodes/groupsum/type", data=b"\xff\xfe", dtype="S2")
    refused(good, "UTF-8")


def test_no_node_group_or_root_not_a_graph(good, tmp_path):
    edit(good, lambda h: h.__delitem__("node"))
    refused(good, "no 'node' group")
    p = tmp_path / "root.h5"
    with h5py.File(p, "w") as h:
        h.create_dataset("version", data="1.0.8", dtype=h5py.string_dtype())
        n = h.create_group("node")
        n.create_dataset("type", data="Scale", dtype=h5py.string_dtype())
        n.create_dataset("scale", data=np.ones(2, f32))
    refused(p, "must be a graph")


def test_deep_nesting_is_refused(tmp_path):
    p = tmp_path / "deep.h5"
    with h5py.File(p, "w") as h:
        g = h.create_group("node")
        for _ in range(200):
            g.create_dataset("type", data="NIRGraph", dtype=h5py.string_dtype())
            g.create_dataset("edges", data=np.array([["sub", "sub"]], dtype=object),
                             dtype=h5py.string_dtype())
            g = g.create_group("nodes").create_group("sub")
        g.create_dataset("type", data="NIRGraph", dtype=h5py.string_dtype())
    refused(p, "nested deeper")


def test_rockpool_style_output_shape(tmp_path):
    g = ir.Graph.sequential(ir.Scale(np.ones(3, f32)))
    polyir.save(g, tmp_path / "g.h5")
    replace(tmp_path / "g.h5", "node/nodes/output/shape", data=np.array([1, 3]))
    with pytest.warns(polyir.PolyirWarning, match="declares shape"):
        assert polyir.load(tmp_path / "g.h5").nodes["output"].shape == (3,)
    refused(tmp_path / "g.h5", "strict=False", strict=True)
    replace(tmp_path / "g.h5", "node/nodes/output/shape", data=np.array([4]))
    refused(tmp_path / "g.h5", "shape")


def test_inferred_marker_is_checked(tmp_path):
    g = graphs_per_kind()["Conv2d_valid"]
    p = tmp_path / "c.h5"
    polyir.save(g, p)
    with h5py.File(p, "r") as h:
        marked = {m.decode() if isinstance(m, bytes) else m
                  for m in h["node/nodes/node"].attrs[h5.INFERRED_ATTR]}
        assert marked == {"input_shape", "bias"}  # a bias-free conv: zeros written for NIR
        assert h["node/nodes/node/input_shape"][()].tolist() == [5, 5]
    edit(p, lambda h: h["node/nodes/node"].attrs.__setitem__(h5.INFERRED_ATTR, ["weight"]))
    refused(p, "not an optional field")


def test_the_loader_imports_nothing(good):
    import sys
    polyir.load(good)                                 # warm: h5py etc. imported once
    before = set(sys.modules)
    with h5py.File(good, "r+") as h:                  # a kind name that is a module path
        del h["node/nodes/groupsum/type"]
        h["node/nodes/groupsum"].create_dataset("type", data="json", dtype=h5py.string_dtype())
    refused(good, "unknown node kind")
    assert set(sys.modules) - before == set()


# ------------------------------------------------------------------------------------------------
# fuzzing: mutated valid files give a graph or FormatError, never anything else


def fuzz_sources(tmp_path):
    paths = []
    graphs = dict(family_graphs())
    graphs["nir_nested"] = graphs_per_kind()["NIRGraph"]
    graphs["conv1d"] = graphs_per_kind()["Conv1d"]
    for name, g in graphs.items():
        p = tmp_path / f"src_{name}.h5"
        polyir.save(g, p)
        paths.append(p)
    return paths


def _all_objects(h):
    names = []
    h.visit(names.append)
    return names


REPLACEMENTS = [
    dict(data="text", dtype=h5py.string_dtype()),
    dict(data=np.array(b"\xff\x01", dtype="S2")),
    dict(data=1.5),
    dict(data=np.float32(np.nan)),
    dict(data=-7),
    dict(data=np.int64(2**62)),
    dict(data=True),
    dict(data=np.zeros((0,))),
    dict(data=np.zeros((2, 3), np.uint8)),
    dict(data=np.arange(5, dtype=np.int16)),
    dict(data=np.full(3, 16, np.int64)),
    dict(data=np.array([["a", "b"]], dtype=object), dtype=h5py.string_dtype()),
    dict(data=np.complex64(1j)),
    dict(shape=(1 << 20,), dtype=np.float64, chunks=(1024,)),
    dict(shape=None, dtype="f4"),
]


def mutate(path, rng, data: bytes):
    """One random mutation of the file at `path` (whose original bytes are `data`)."""
    choice = rng.integers(0, 10)
    if choice == 0:                                          # flip bytes
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 20))):
            buf[int(rng.integers(0, len(buf)))] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(buf))
        return "flip"
    if choice == 1:                                          # truncate
        path.write_bytes(data[:int(rng.integers(0, len(data)))])
        return "truncate"
    if choice == 2:                                          # overwrite a block with junk
        buf = bytearray(data)
        start = int(rng.integers(0, len(buf)))
        n = int(rng.integers(1, 64))
        buf[start:start + n] = rng.integers(0, 256, len(buf[start:start + n])).astype(
            np.uint8).tobytes()
        path.write_bytes(bytes(buf))
        return "junk"
    path.write_bytes(data)
    with h5py.File(path, "r+") as h:
        objs = _all_objects(h)
        target = objs[int(rng.integers(0, len(objs)))]
        parent, _, name = target.rpartition("/")
        parent = h[parent] if parent else h
        if choice == 3:
            del h[target]
            return f"delete {target}"
        if choice in (4, 5):
            kw = REPLACEMENTS[int(rng.integers(0, len(REPLACEMENTS)))]
            del h[target]
            parent.create_dataset(name, **kw)
            return f"replace {target} with {kw}"
        if choice == 6:
            obj = h[target]
            if isinstance(obj, h5py.Group):
                obj.create_dataset(f"extra{int(rng.integers(0, 9))}", data=1)
            else:
                obj.attrs["junk"] = 1
                obj = h[parent.name]
                kw = REPLACEMENTS[int(rng.integers(0, len(REPLACEMENTS)))]
                if "x" not in obj:
                    obj.create_dataset("x", **kw)
            return f"extra at {target}"
        if choice == 7:                                      # retype a node
            types = [o for o in objs if o.endswith("/type")]
            t = types[int(rng.integers(0, len(types)))]
            kinds = sorted(ir.KINDS) + ["Identity", ""]
            del h[t]
            h.create_dataset(t, data=kinds[int(rng.integers(0, len(kinds)))],
                             dtype=h5py.string_dtype())
            return f"retype {t}"
        if choice == 8:                                      # change dtype, keep values
            obj = h[target]
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biuf":
                values = obj[()]
                dt = [np.float16, np.float32, np.float64, np.int8, np.uint8, np.int64,
                      bool][int(rng.integers(0, 7))]
                del h[target]
                parent.create_dataset(name, data=np.asarray(values).astype(dt))
            return f"dtype {target}"
        obj = h[target]                                      # change shape, keep dtype
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biuf" and obj.shape:
            values = np.asarray(obj[()]).reshape(-1)
            n = int(rng.integers(0, values.size + 3))
            new = np.resize(values, n) if values.size else np.zeros(n, values.dtype)
            if rng.integers(0, 2) and n % 2 == 0 and n:
                new = new.reshape(2, -1)
            del h[target]
            parent.create_dataset(name, data=new)
        return f"shape {target}"


def run_fuzz(tmp_path, cases, seed):
    rng = np.random.default_rng(seed)
    sources = [(p, p.read_bytes()) for p in fuzz_sources(tmp_path)]
    target = tmp_path / "fuzz.h5"
    outcomes = {"ok": 0, "FormatError": 0}
    for i in range(cases):
        src, data = sources[i % len(sources)]
        what = mutate(target, rng, data)
        try:
            g = polyir.load(target)
        except FormatError:
            outcomes["FormatError"] += 1
            continue
        except BaseException as exc:
            raise AssertionError(f"case {i} ({src.name}, {what}) raised "
                                 f"{type(exc).__name__}: {exc}") from exc
        g.check()
        outcomes["ok"] += 1
    # the mutations must actually bite: most break the file, some are harmless
    assert outcomes["FormatError"] > cases // 4, outcomes
    return outcomes


@pytest.mark.filterwarnings("ignore::polyir.PolyirWarning")
def test_fuzz_mutated_files(tmp_path):
    run_fuzz(tmp_path, 300, seed=1234)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::polyir.PolyirWarning")
@pytest.mark.parametrize("seed", range(5))
def test_fuzz_mutated_files_long(tmp_path, seed):
    run_fuzz(tmp_path, 1000, seed=seed)
