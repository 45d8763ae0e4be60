"""The NIR paper's reference files (tests/data/nir): written by Norse, Sinabs, snnTorch
and Rockpool with nir 0.1-0.2. They load, agree with nir.read field by field, survive a polyir
round trip; the malformed *_subgraph files and Rockpool's inconsistent Output are reported."""
from __future__ import annotations

import warnings

import h5py
import nir
import numpy as np
import pytest

import polyir
from polyir import ir
from polyir.ir import FormatError

from nir_compare import assert_nir_equal

GOOD = ["lif_norse.nir", "cnn_sinabs.nir", "braille_noDelay_bias_zero.nir",
        "braille_noDelay_noBias_subtract.nir", "two_lif_neurons.nir"]


def load_quiet(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # these files must load without any warning
        return polyir.load(path, **kw)


@pytest.mark.parametrize("name", GOOD)
def test_reference_files_load_and_match_nir(nir_data, name, tmp_path):
    g = load_quiet(nir_data / name, strict=True)
    g.check()
    assert_nir_equal(g, nir.read(str(nir_data / name)))
    # polyir writes them back unchanged, and nir reads that file as it read the original
    polyir.save(g, tmp_path / "again.nir")
    assert polyir.load(tmp_path / "again.nir") == g
    assert_nir_equal(g, nir.read(str(tmp_path / "again.nir")))


def kinds(g):
    out = {}
    for n in g.nodes.values():
        out[n.kind_name] = out.get(n.kind_name, 0) + 1
    return out


def test_lif_norse(nir_data):
    path = nir_data / "lif_norse.nir"
    with h5py.File(path, "r") as f:                 # written by nir 0.1.1: no v_reset stored
        assert "v_reset" not in f["node/nodes/1"]
        threshold = f["node/nodes/1/v_threshold"][()]
        tau = f["node/nodes/1/tau"][()]
    g = load_quiet(path)
    assert kinds(g) == {"Input": 1, "Affine": 1, "LIF": 1, "Output": 1}
    lif = g.nodes["1"]
    assert np.array_equal(lif.v_threshold, threshold) and np.array_equal(lif.tau, tau)
    assert lif.v_reset.shape == threshold.shape and not lif.v_reset.any()
    assert g.nodes["0"].weight.shape == (1, 1)
    assert g.order()[1] == set()


def test_cnn_sinabs_shapes(nir_data):
    path = nir_data / "cnn_sinabs.nir"
    g = load_quiet(path)
    assert kinds(g) == {"Input": 1, "Conv2d": 3, "IF": 5, "SumPool2d": 2, "Flatten": 1,
                        "Affine": 2, "Output": 1}
    types = g.infer_types()
    assert types["input"].shape == (2, 34, 34) and types["output"].shape == (10,)
    # every conv/pool output by torch's formula from the raw file values, read with h5py
    with h5py.File(path, "r") as f:
        nodes = f["node/nodes"]
        order, _ = g.order()
        shape = (2, 34, 34)
        for name in order[1:-1]:
            t = nodes[name]["type"][()].decode()
            if t == "Conv2d":
                w = nodes[name]["weight"].shape
                st, pad, dil = (np.broadcast_to(nodes[name][k][()], (2,)) for k in
                                ("stride", "padding", "dilation"))
                shape = (w[0],) + tuple(int((n + 2 * p - d * (k - 1) - 1) // s + 1) for n, k, s, p, d
                                        in zip(shape[1:], w[2:], st, pad, dil))
            elif t == "SumPool2d":
                k, s, p = (nodes[name][x][()] for x in ("kernel_size", "stride", "padding"))
                shape = (shape[0],) + tuple(int((n + 2 * pp - kk) // ss + 1) for n, kk, ss, pp
                                            in zip(shape[1:], k, s, p))
            elif t == "Flatten":
                shape = (int(np.prod(shape)),)
            elif t == "Affine":
                shape = (nodes[name]["weight"].shape[0],)
            assert types[name].shape == shape, (name, t)


@pytest.mark.parametrize("name, hidden, weight_kind", [
    ("braille_noDelay_bias_zero.nir", 38, "Affine"),
    ("braille_noDelay_noBias_subtract.nir", 40, "Linear"),
])
def test_braille_recurrent_networks(nir_data, name, hidden, weight_kind):
    g = load_quiet(nir_data / name)
    assert g.nodes["lif1.lif"].kind_name == "CubaLIF"
    assert g.nodes["lif1.lif"].tau_mem.shape == (hidden,)
    assert g.nodes["lif2"].tau_mem.shape == (7,)
    assert g.nodes["lif1.w_rec"].kind_name == weight_kind
    order, recurrent = g.order()
    assert recurrent == {("lif1.lif", "lif1.w_rec")}  # the spikes are read one step late
    assert order.index("lif1.w_rec") < order.index("lif1.lif")
    assert order.index("fc1") < order.index("lif1.lif")
    assert order.index("lif1.lif") < order.index("fc2") < order.index("lif2")
    assert g.infer_types()["input"].shape == (12,)


def test_two_lif_neurons(nir_data):
    g = load_quiet(nir_data / "two_lif_neurons.nir")
    assert g.edges and g.order()[0] == ["in", "linear1", "lif1", "linear2", "lif2", "out"]


def test_rockpool_output_shape_warns_or_is_refused(nir_data):
    path = nir_data / "lif_rockpool.nir"
    with h5py.File(path, "r") as f:
        assert f["node/nodes/output/shape"][()].tolist() == [1, 1, 1]
    with pytest.raises(ValueError):                 # nir itself refuses it with type checks on
        nir.read(str(path))
    with pytest.warns(polyir.PolyirWarning, match=r"Output 'output' declares shape \(1, 1, 1\)"):
        g = polyir.load(path)
    assert g.nodes["output"].shape == (1,)
    g.check()
    with pytest.raises(FormatError) as exc:
        polyir.load(path, strict=True)
    assert "strict=False" in str(exc.value) and "output" in str(exc.value)
    # what nir reads without its type check is the same network
    n = nir.read(str(path), type_check=False)
    assert np.array_equal(g.nodes["1_LIFNeuronTorch"].tau, n.nodes["1_LIFNeuronTorch"].tau)


@pytest.mark.parametrize("name", ["braille_noDelay_bias_zero_subgraph.nir",
                                  "braille_noDelay_noBias_subtract_subgraph.nir"])
def test_malformed_subgraph_files_are_refused(nir_data, name):
    with pytest.raises(FormatError) as exc:
        polyir.load(nir_data / name)
    msg = str(exc.value)
    # the inner graph 'lif1' has edges to 'lif', which it does not contain (its node is 'lif1')
    assert "'lif'" in msg and "does not exist" in msg and "lif1" in msg
    assert name in msg
    assert isinstance(exc.value.__cause__, ir.GraphError)
    assert exc.value.__cause__.node == "lif1.lif"
