"""The IR: every kind constructs and coerces, bad parameters raise GraphError naming the field,
Graph.check enforces the IR's invariants naming node/field/fix, shape inference, sequential,
order (recurrent edges) and flattened()."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from polyir import ir
from families import family_graphs
from polyir.ir import GraphError
from polyir.ir.walk import GraphWalker, RuleTable

f32 = np.float32


def ones(*shape):
    return np.ones(shape, f32)


def sample_nodes() -> dict[str, object]:
    """One valid node of every registered kind (kept in step with the registry by a test)."""
    rng = np.random.default_rng(1)
    nested = ir.Graph.sequential(ir.Affine(ones(2, 3), ones(2)), ir.Activation("relu"))
    return {
        "Input": ir.Input((3,)),
        "Output": ir.Output((3,)),
        "Affine": ir.Affine([[1, 2], [3, 4], [5, 6]], [0, 1, 2]),
        "Linear": ir.Linear(ones(2, 3)),
        "Scale": ir.Scale([1.0, 2.0, 3.0]),
        "Threshold": ir.Threshold([0.5, 0.5]),
        "Flatten": ir.Flatten(start_dim=0),
        "Conv1d": ir.Conv1d(10, ones(2, 3, 3), stride=2, padding=1, dilation=2),
        "Conv2d": ir.Conv2d((6, 6), ones(4, 3, 3, 3), stride=2, padding=1),
        "SumPool2d": ir.SumPool2d((2, 2), (2, 2)),
        "AvgPool2d": ir.AvgPool2d((2, 2), (1, 1), (1, 1)),
        "Delay": ir.Delay([0.1, 0.2]),
        "I": ir.I(ones(4)),
        "IF": ir.IF(ones(4), ones(4)),
        "LI": ir.LI(ones(4), ones(4), np.zeros(4, f32)),
        "LIF": ir.LIF(ones(4), ones(4), np.zeros(4, f32), ones(4)),
        "CubaLI": ir.CubaLI(ones(4), ones(4), ones(4), np.zeros(4, f32)),
        "CubaLIF": ir.CubaLIF(ones(4), ones(4), ones(4), np.zeros(4, f32), ones(4)),
        "NIRGraph": nested,
        "Activation": ir.Activation("leaky_relu", 0.2),
        "LogicLayer": ir.LogicLayer([0, 1, 2], [1, 2, 0], [1, 6, 14]),
        "LogicTree2d": ir.LogicTree2d(rng.integers(0, 2, (2, 4, 3)), rng.integers(0, 16, (2, 3)),
                                      (2, 2)),
        "OrPool2d": ir.OrPool2d((2, 2), (2, 2)),
        "Binarize": ir.Binarize([0.0, 0.5]),
        "GroupSum": ir.GroupSum(2, tau=3.0),
        "RuleSet": family_graphs()["rules"].nodes["rules"],
        "ChannelAffine": ir.ChannelAffine(ones(3), ones(3)),
        "MaxPool1d": ir.MaxPool1d(3, 2, 1),
        "MaxPool2d": ir.MaxPool2d((2, 2), (2, 2)),
        "AdaptiveAvgPool2d": ir.AdaptiveAvgPool2d((1, 1)),
        "Concat": ir.Concat(2, axis=0),
        "Binary": ir.Binary("mul"),
        "Clamp": ir.Clamp(0.0, 6.0),
        "Softmax": ir.Softmax(-1, log=True),
        "LayerNorm": ir.LayerNorm((3,), ones(3), ones(3)),
    }


# ------------------------------------------------------------------------------------------------
# kinds


def test_every_registered_kind_has_a_sample_and_constructs():
    samples = sample_nodes()
    assert sorted(samples) == sorted(ir.KINDS), "add a sample for each new kind"
    for name, node in samples.items():
        assert type(node).file_type == name
        assert ir.KINDS[name] is type(node)


def test_kinds_are_frozen_and_arrays_read_only():
    node = ir.Affine(ones(2, 3), ones(2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.weight = ones(2, 3)
    with pytest.raises(ValueError):
        node.weight[0, 0] = 5.0


def test_registry_is_closed_to_double_registration():
    with pytest.raises(TypeError):
        ir.kind(type("Affine", (), {}))


def test_dtype_coercion():
    a = ir.Affine([[1, 2], [3, 4]], [1, 2])                   # ints -> float32
    assert a.weight.dtype == np.float32 and a.bias.dtype == np.float32
    assert a.weight.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    b = ir.Affine(np.ones((2, 2)), np.ones(2))                 # float64 kept as given
    assert b.weight.dtype == np.float64
    h = ir.Scale(np.ones(3, np.float16))
    assert h.scale.dtype == np.float16
    layer = ir.LogicLayer(np.array([0.0, 1.0]), [1, 0], np.array([6, 14], np.int32))
    assert layer.a.dtype == np.int64 and layer.a.tolist() == [0, 1]
    assert layer.b.dtype == np.int64
    assert layer.gate.dtype == np.uint8 and layer.gate.tolist() == [6, 14]
    assert ir.Conv2d(None, ones(1, 1, 2, 2), stride=3).stride == (3, 3)      # int repeated
    same = ir.Conv2d(None, ones(1, 1, 2, 2), padding="same")  # torch's split: the odd one last
    assert same.padding == (0, 0) and same.padding_end == (1, 1) and same.pads == ((0, 1), (0, 1))
    assert ir.Conv1d(None, ones(1, 1, 2), padding=(2,)).padding == 2
    assert ir.GroupSum(np.int64(3), tau=np.float32(2)).k == 3
    assert type(ir.GroupSum(3, tau=2).tau) is float
    assert ir.Input(np.array([2, 3])).shape == (2, 3)
    assert ir.Activation("elu").alpha == 1.0 and ir.Activation("leaky_relu").alpha == 0.01
    # missing optional neuron fields are filled like NIR does
    lif = ir.LIF(ones(3), ones(3), ones(3), np.full(3, 2.0, f32))
    assert lif.v_reset.tolist() == [0, 0, 0] and lif.v_reset.dtype == np.float32
    cuba = ir.CubaLIF(ones(3), ones(3), ones(3), ones(3), ones(3))
    assert cuba.w_in.tolist() == [1, 1, 1] and cuba.v_reset.tolist() == [0, 0, 0]
    conv = ir.Conv2d(None, ones(5, 1, 3, 3))
    assert conv.bias is None  # a conv without bias stays without one (no zeros to train)


def test_metadata_coercion_and_equality():
    a = ir.Scale(ones(2), metadata={"name": b"x", "n": np.int64(3), "arr": np.arange(3)})
    assert a.metadata["name"] == "x" and type(a.metadata["n"]) is int
    assert a == ir.Scale(ones(2), metadata={"name": "x", "n": 3, "arr": np.arange(3)})
    assert a != ir.Scale(ones(2), metadata={"name": "y", "n": 3, "arr": np.arange(3)})
    assert ir.Scale(ones(2)) != ir.Scale(ones(2).astype(np.float64))    # dtype is part of it
    assert ir.Scale(ones(2)) != ir.Scale(2 * ones(2))
    for bad in ({"k": object()}, {"a/b": 1}, {"": 1}, {"big": 2**70}):
        with pytest.raises(GraphError) as exc:
            ir.Scale(ones(2), metadata=bad)
        assert exc.value.field == "metadata"


@pytest.mark.parametrize("make, field", [
    (lambda: ir.Affine(ones(2, 3), ones(3)), "bias"),
    (lambda: ir.Affine(ones(3), ones(3)), "weight"),
    (lambda: ir.Affine([["a"]], ones(1)), "weight"),
    (lambda: ir.Linear([[1, 2], [3]]), "weight"),
    (lambda: ir.Conv2d(None, ones(4, 1, 3, 3), groups=3), "groups"),
    (lambda: ir.Conv2d(None, ones(4, 1, 3, 3), padding="full"), "padding"),
    (lambda: ir.Conv2d(None, ones(4, 1, 3, 3), stride=(1, 1, 1)), "stride"),
    (lambda: ir.Conv1d(10, ones(2, 1, 3), bias=ones(3)), "bias"),
    (lambda: ir.SumPool2d((0, 2), (1, 1)), "kernel_size"),
    (lambda: ir.LIF(ones(3), ones(3), ones(3), ones(4)), "v_threshold"),
    (lambda: ir.CubaLI(ones(3), ones(2), ones(3), ones(3)), "tau_mem"),
    (lambda: ir.Input((3,), elem="float"), "elem"),
    (lambda: ir.Input((3,), elem="relation"), "arity"),
    (lambda: ir.Input(3), "shape"),
    (lambda: ir.Activation("swish"), "fn"),
    (lambda: ir.LogicLayer([0, 1], [1, 0], [3, 16]), "gate"),
    (lambda: ir.LogicLayer([0, 1], [1, 0], [3, -1]), "gate"),
    (lambda: ir.LogicLayer([0, 1], [1, 0], [3.5, 1]), "gate"),
    (lambda: ir.LogicLayer([0, 1], [1], [3, 1]), "gate"),
    (lambda: ir.LogicLayer([0.5, 1], [1, 0], [3, 1]), "a"),
    (lambda: ir.LogicLayer([0, 1], [1, 0], [3, 1], logits=np.zeros((2, 15))), "logits"),
    (lambda: ir.LogicTree2d(np.zeros((2, 3, 3)), np.zeros((2, 2)), (2, 2)), "leaves"),
    (lambda: ir.LogicTree2d(np.zeros((2, 4, 3)), np.zeros((2, 2)), (2, 2)), "gates"),
    (lambda: ir.LogicTree2d(np.full((1, 2, 3), 2), np.zeros((1, 1)), (2, 2)), "leaves"),
    (lambda: ir.OrPool2d((2, 2), (2, 2), (2, 2)), "padding"),
    (lambda: ir.Binarize(np.zeros((0,))), "thresholds"),
    (lambda: ir.GroupSum(0), "k"),
    (lambda: ir.GroupSum(2, tau=0.0), "tau"),
    (lambda: ir.GroupSum(1.5), "k"),
    (lambda: ir.GroupSum(float("nan")), "k"),
    (lambda: ir.GroupSum(float("inf")), "k"),
    (lambda: ir.GroupSum("2"), "k"),
    (lambda: ir.Flatten(start_dim=True), "start_dim"),
    (lambda: ir.Activation(3), "fn"),
])
def test_bad_parameters_raise_graph_error_naming_the_field(make, field):
    with pytest.raises(GraphError) as exc:
        make()
    assert exc.value.field == field
    assert exc.value.fix                       # every error says how to fix it
    assert field in str(exc.value)


def test_argmax_of_logits_must_be_the_gate():
    logits = np.zeros((2, 16), f32)
    logits[0, 6] = logits[1, 14] = 1.0
    ir.LogicLayer([0, 1], [1, 0], [6, 14], logits=logits)
    with pytest.raises(GraphError) as exc:
        ir.LogicLayer([0, 1], [1, 0], [6, 13], logits=logits)
    assert exc.value.field == "gate" and "(1,)" in str(exc.value)
    tree_logits = np.zeros((1, 3, 16), f32)
    tree_logits[0, :, 7] = 1
    ir.LogicTree2d(np.zeros((1, 4, 3)), [[7, 7, 7]], (1, 1), logits=tree_logits)
    with pytest.raises(GraphError):
        ir.LogicTree2d(np.zeros((1, 4, 3)), [[7, 7, 1]], (1, 1), logits=tree_logits)


def test_gate_tables_follow_difflogic():
    # hand-written: G(a, b) for (a, b) = 00, 01, 10, 11
    assert ir.GATE_TABLE[1].tolist() == [0, 0, 0, 1]        # AND
    assert ir.GATE_TABLE[6].tolist() == [0, 1, 1, 0]        # XOR
    assert ir.GATE_TABLE[7].tolist() == [0, 1, 1, 1]        # OR
    assert ir.GATE_TABLE[2].tolist() == [0, 0, 1, 0]        # A AND NOT B
    assert ir.GATE_TABLE[13].tolist() == [1, 1, 0, 1]       # NOT A OR B
    assert ir.GATE_NAMES[8] == "NOR" and ir.GATE_TABLE[8].tolist() == [1, 0, 0, 0]
    for g in range(16):
        c0, c1, c2, c3 = ir.GATE_COEFFS[g]
        for i, (a, b) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            assert c0 + c1 * a + c2 * b + c3 * a * b == ir.GATE_TABLE[g, i]


# ------------------------------------------------------------------------------------------------
# Graph.check


def chain(*pairs):
    g = ir.Graph()
    for name, node in pairs:
        g.add(name, node)
    names = [n for n, _ in pairs]
    for s, d in zip(names, names[1:]):
        g.connect(s, d)
    return g


def error_of(graph) -> GraphError:
    with pytest.raises(GraphError) as exc:
        graph.check()
    assert exc.value.fix
    return exc.value


def test_valid_family_graphs_check():
    for g in family_graphs().values():
        g.check()


def test_edge_to_missing_node():
    g = chain(("x", ir.Input((3,))), ("y", ir.Output((3,))))
    g.connect("x", "nowhere")
    err = error_of(g)
    assert err.node == "nowhere" and err.field == "edges" and "does not exist" in str(err)
    g = chain(("x", ir.Input((3,))), ("y", ir.Output((3,))))
    g.connect("ghost", "y")
    assert error_of(g).node == "ghost"


def test_shape_mismatch_names_the_destination():
    g = chain(("x", ir.Input((4,))), ("fc", ir.Affine(ones(2, 3), ones(2))), ("y", ir.Output((2,))))
    err = error_of(g)
    assert err.node == "fc" and err.field == "input"
    assert "(4,)" in str(err) and "(3,)" in str(err)
    g = chain(("x", ir.Input((3,))), ("fc", ir.Affine(ones(2, 3), ones(2))), ("y", ir.Output((5,))))
    assert error_of(g).node == "y"


def test_fan_in_edges_must_agree():
    g = ir.Graph()
    g.add("x", ir.Input((3,)))
    g.add("a", ir.Affine(ones(2, 3), ones(2)))
    g.add("b", ir.Affine(ones(4, 3), ones(4)))
    g.add("act", ir.Activation("tanh"))
    g.add("y", ir.Output((2,)))
    for e in [("x", "a"), ("x", "b"), ("a", "act"), ("b", "act"), ("act", "y")]:
        g.connect(*e)
    err = error_of(g)
    assert err.node == "act" and "disagree" in str(err)


def test_real_into_logic_needs_binarize():
    layer = ir.LogicLayer([0, 1], [1, 2], [1, 6])
    g = chain(("x", ir.Input((3,))), ("l1", layer), ("gs", ir.GroupSum(1)), ("y", ir.Output((1,))))
    err = error_of(g)
    assert err.node == "l1" and err.field == "input" and "Binarize" in err.fix
    # the same with bits declared at the input, or a Binarize in between, is fine
    chain(("x", ir.Input((3,), elem="bit")), ("l1", layer), ("gs", ir.GroupSum(1)),
          ("y", ir.Output((1,)))).check()
    chain(("x", ir.Input((1,))), ("bin", ir.Binarize([0.1, 0.2, 0.3])), ("l1", layer),
          ("gs", ir.GroupSum(1)), ("y", ir.Output((1,)))).check()


def test_index_out_of_range():
    g = chain(("x", ir.Input((3,), elem="bit")), ("l1", ir.LogicLayer([0, 3], [1, 2], [1, 6])),
              ("gs", ir.GroupSum(1)), ("y", ir.Output((1,))))
    err = error_of(g)
    assert err.node == "l1" and err.field == "a" and "3" in str(err)
    g = chain(("x", ir.Input((3,), elem="bit")), ("l1", ir.LogicLayer([0, 1], [1, -1], [1, 6])),
              ("gs", ir.GroupSum(1)), ("y", ir.Output((1,))))
    assert error_of(g).field == "b"
    tree = ir.LogicTree2d(np.array([[[0, 0, 0], [2, 1, 1]]]), [[1]], (2, 2))
    g = chain(("x", ir.Input((2, 4, 4), elem="bit")), ("t", tree), ("y", ir.Output((1, 3, 3))))
    err = error_of(g)
    assert err.node == "t" and err.field == "leaves"


def test_group_sum_width_must_divide():
    g = chain(("x", ir.Input((5,), elem="bit")), ("gs", ir.GroupSum(2)), ("y", ir.Output((2,))))
    err = error_of(g)
    assert err.node == "gs" and err.field == "k"


def test_cycle_without_stateful_node_is_refused():
    g = ir.Graph()
    g.add("x", ir.Input((3,)))
    g.add("a", ir.Affine(np.eye(3, dtype=f32), np.zeros(3, f32)))
    g.add("b", ir.Linear(np.eye(3, dtype=f32)))
    g.add("y", ir.Output((3,)))
    for e in [("x", "a"), ("a", "b"), ("b", "a"), ("b", "y")]:
        g.connect(*e)
    err = error_of(g)
    assert err.field == "edges" and err.node in ("a", "b") and "cycle" in str(err)
    g2 = chain(("x", ir.Input((3,))), ("s", ir.Scale(ones(3))), ("y", ir.Output((3,))))
    g2.connect("s", "s")
    assert error_of(g2).node == "s"


def lif(n=3):
    return ir.LIF(ones(n), ones(n), np.zeros(n, f32), ones(n))


def test_recurrent_edge_through_lif_is_allowed():
    g = family_graphs()["leaky_integrators"]
    g.check()
    order, recurrent = g.order()
    assert recurrent == {("lif", "rec")}  # the delay sits on the spikes, not on rec's output
    assert order.index("rec") < order.index("lif") < order.index("readout")
    g = chain(("x", ir.Input((3,))), ("lif", lif()), ("y", ir.Output((3,))))
    g.connect("lif", "lif")                                         # a self-loop
    g.check()
    assert g.order()[1] == {("lif", "lif")}


def test_nodes_downstream_of_a_cycle_get_no_delay():
    # lif2 is listed first but only follows the cycle a -> lif1 -> rec -> a
    g = ir.Graph()
    g.add("x", ir.Input((3,)))
    g.add("lif2", lif())
    g.add("a", ir.Affine(np.eye(3, dtype=f32), np.zeros(3, f32)))
    g.add("lif1", lif())
    g.add("rec", ir.Linear(np.eye(3, dtype=f32)))
    g.add("y", ir.Output((3,)))
    for e in [("x", "a"), ("a", "lif1"), ("lif1", "rec"), ("rec", "a"), ("lif1", "lif2"),
              ("lif2", "y")]:
        g.connect(*e)
    g.check()
    order, recurrent = g.order()
    # the cycle starts at its entry (a, fed by the input); walking back from it, the first
    # stateful node's output (lif1 -> rec) is delayed, nothing else
    assert recurrent == {("lif1", "rec")}
    assert order == ["x", "rec", "a", "lif1", "lif2", "y"]


def test_missing_input_or_output():
    g = ir.Graph()
    g.add("fc", ir.Affine(ones(2, 3), ones(2)))
    g.add("y", ir.Output((2,)))
    g.connect("fc", "y")
    err = error_of(g)
    assert err.field == "nodes" and "Input" in str(err)
    g = ir.Graph()
    g.add("x", ir.Input((3,)))
    g.add("fc", ir.Affine(ones(2, 3), ones(2)))
    g.connect("x", "fc")
    assert "Output" in str(error_of(g))


def test_unconnected_port_and_bad_edges():
    g = ir.Graph()
    g.add("x", ir.Input((3,)))
    g.add("y", ir.Output((3,)))
    err = error_of(g)
    assert err.node == "y" and "not connected" in str(err)
    g = chain(("x", ir.Input((3,))), ("y", ir.Output((3,))))
    g.connect("y", "x")
    assert error_of(g).field == "edges"
    g = chain(("x", ir.Input((3,))), ("s", ir.Scale(ones(3))), ("y", ir.Output((3,))))
    g.connect("x", "s", "other")
    err = error_of(g)
    assert err.node == "s" and "port" in str(err)


def test_bad_node_names():
    g = ir.Graph()
    for bad in ("", "a/b", ".", 3):
        with pytest.raises(GraphError):
            g.add(bad, ir.Input((1,)))
    g.add("x", ir.Input((1,)))
    with pytest.raises(GraphError) as exc:
        g.add("x", ir.Input((1,)))
    assert exc.value.node == "x"
    with pytest.raises(GraphError):
        g.add("z", "not a node")


def test_check_errors_name_nested_nodes_with_a_prefix():
    inner = chain(("x", ir.Input((3,))), ("fc", ir.Affine(ones(2, 4), ones(2))),
                  ("y", ir.Output((2,))))
    outer = chain(("x", ir.Input((3,))), ("sub", inner), ("y", ir.Output((2,))))
    err = error_of(outer)
    assert err.node == "sub.fc"


# ------------------------------------------------------------------------------------------------
# shape inference


def test_shape_inference_along_edges():
    t = family_graphs()["cnn"].infer_types()
    # conv 3x3, padding 1, stride 1 keeps 8x8; pool 2/2 halves; flatten 4*4*4
    assert t["conv2d"] == ir.port((4, 8, 8))
    assert t["avgpool2d"] == ir.port((4, 4, 4))
    assert t["flatten"] == ir.port((64,))
    assert t["affine"] == ir.port((3,))
    t = family_graphs()["logic"].infer_types()
    assert t["binarize"] == ir.port((15,), "bit")            # 5 inputs x 3 thresholds
    assert t["logiclayer"] == ir.port((24,), "bit")
    assert t["groupsum"] == ir.port((3,))
    t = family_graphs()["logic_conv"].infer_types()
    assert t["logictree2d"] == ir.port((4, 6, 6), "bit")    # (8 - 3) // 1 + 1
    assert t["orpool2d"] == ir.port((4, 3, 3), "bit")
    assert t["flatten"] == ir.port((36,), "bit")


@pytest.mark.parametrize("node, shape_in, shape_out", [
    # (L + 2p - d (k - 1) - 1) // s + 1 = (10 + 2 - 4 - 1) // 2 + 1 = 4
    (ir.Conv1d(None, ones(2, 3, 3), stride=2, padding=1, dilation=2), (3, 10), (2, 4)),
    (ir.Conv1d(None, ones(2, 3, 3), padding="same"), (3, 10), (2, 10)),
    (ir.Conv2d(None, ones(5, 3, 3, 2), stride=(2, 1)), (3, 9, 7), (5, 4, 6)),
    (ir.Conv2d(None, ones(4, 1, 3, 3), groups=2), (2, 5, 5), (4, 3, 3)),
    (ir.SumPool2d((3, 3), (2, 2), (1, 1)), (2, 7, 7), (2, 4, 4)),
    (ir.Flatten(start_dim=1, end_dim=2), (2, 3, 4), (2, 12)),
    (ir.Flatten(start_dim=0, end_dim=1), (2, 3, 4), (6, 4)),
    (ir.Flatten(start_dim=-2), (2, 3, 4), (2, 12)),
    (ir.Activation("gelu"), (2, 3), (2, 3)),
    (ir.Binarize(np.zeros((3, 2)), axis=1), (4, 3), (4, 6)),
    (ir.Binarize(np.zeros((4, 3, 2)), axis=0), (4, 3), (8, 3)),
])
def test_shape_rules(node, shape_in, shape_out):
    elem = "real"
    g = chain(("x", ir.Input(shape_in, elem=elem)), ("n", node), ("y", ir.Output(shape_out)))
    t = g.infer_types()
    assert t["n"].shape == shape_out
    g.check()


def test_flatten_bad_dims():
    g = chain(("x", ir.Input((2, 3))), ("f", ir.Flatten(start_dim=1, end_dim=0)),
              ("y", ir.Output((6,))))
    err = error_of(g)
    assert err.node == "f" and err.field == "end_dim"
    g = chain(("x", ir.Input((2, 3))), ("f", ir.Flatten(start_dim=5)), ("y", ir.Output((6,))))
    assert error_of(g).field == "start_dim"


def test_binarize_thresholds_must_fit():
    g = chain(("x", ir.Input((4, 3))), ("b", ir.Binarize(np.zeros((5, 2)))), ("y", ir.Output((8, 3))))
    err = error_of(g)
    assert err.node == "b" and err.field == "thresholds"


def test_conv_channels_must_fit():
    g = chain(("x", ir.Input((2, 8, 8))), ("c", ir.Conv2d(None, ones(4, 3, 3, 3))),
              ("y", ir.Output((4, 6, 6))))
    err = error_of(g)
    assert err.node == "c"
    g = chain(("x", ir.Input((1, 2, 2))), ("c", ir.Conv2d(None, ones(4, 1, 3, 3))),
              ("y", ir.Output((4, 1, 1))))
    assert error_of(g).node == "c"


# ------------------------------------------------------------------------------------------------
# sequential, equality, nested graphs


def test_sequential_names_edges_and_shapes():
    g = ir.Graph.sequential(ir.Affine(ones(4, 3), ones(4)), ir.Activation("relu"),
                            ir.Affine(ones(2, 4), ones(2)), metadata={"dt": 0.5})
    assert list(g.nodes) == ["input", "affine", "activation", "affine_1", "output"]
    assert g.edges == [("input", "affine"), ("affine", "activation"),
                       ("activation", "affine_1"), ("affine_1", "output")]
    assert g.nodes["input"].shape == (3,) and g.nodes["output"].shape == (2,)
    assert g.metadata == {"dt": 0.5}
    assert g.inputs == ["input"] and g.outputs == ["output"]
    with pytest.raises(GraphError) as exc:
        ir.Graph.sequential(ir.Activation("relu"))
    assert exc.value.field == "shape"
    g = ir.Graph.sequential(ir.LogicLayer([0], [1], [6]), ir.GroupSum(1), input_shape=2,
                            input_elem="bit")
    assert g.nodes["input"] == ir.Input((2,), elem="bit")
    g = ir.Graph.sequential([ir.Input((3,), metadata={"a": 1}), ir.Scale(ones(3)),
                             ir.Output((3,))])
    assert list(g.nodes) == ["input", "scale", "output"]
    assert g.nodes["input"].metadata == {"a": 1}


def test_graph_equality():
    a, b = family_graphs(), family_graphs()
    for k in a:
        assert a[k] == b[k]
    assert a["ffnn"] != a["cnn"]
    c = family_graphs()["ffnn"]
    c.metadata["x"] = 1
    assert c != a["ffnn"]
    d = family_graphs(seed=1)["ffnn"]
    assert d != a["ffnn"]


def nested_graph():
    """x -> pre -> sub(x -> fc -> act -> y) -> post -> y, with a second Input feeding sub."""
    inner = ir.Graph()
    inner.add("a", ir.Input((3,)))
    inner.add("b", ir.Input((3,)))
    inner.add("fc", ir.Affine(ones(2, 3), ones(2)))
    inner.add("act", ir.Activation("tanh"))
    inner.add("out", ir.Output((2,)))
    for e in [("a", "fc"), ("b", "fc"), ("fc", "act"), ("act", "out")]:
        inner.connect(*e)
    g = ir.Graph()
    g.add("x", ir.Input((3,)))
    g.add("pre", ir.Scale(ones(3)))
    g.add("sub", inner)
    g.add("post", ir.Scale(ones(2)))
    g.add("y", ir.Output((2,)))
    for e in [("x", "pre"), ("pre", "sub", "a"), ("x", "sub", "b"), ("sub", "post"),
              ("post", "y")]:
        g.connect(*e)
    return g


def test_nested_graph_checks_and_types():
    g = nested_graph()
    g.check()
    assert sorted(g.nodes["sub"].in_ports()) == ["a", "b"]
    assert g.infer_types()["sub"] == ir.port((2,))


def test_flattened_inlines_nested_graphs():
    g = nested_graph()
    f = g.flattened()
    assert list(f.nodes) == ["x", "pre", "sub.fc", "sub.act", "post", "y"]
    assert sorted(f.edges) == sorted([("x", "pre"), ("pre", "sub.fc"), ("x", "sub.fc"),
                                      ("sub.fc", "sub.act"), ("sub.act", "post"), ("post", "y")])
    f.check()
    assert f.nodes["sub.fc"] is g.nodes["sub"].nodes["fc"]
    # doubly nested: flattening is recursive
    outer = ir.Graph.sequential(ir.Scale(ones(3)), g, input_shape=(3,))
    ff = outer.flattened()
    assert "graph.sub.fc" in ff.nodes and not any(isinstance(n, ir.Graph) for n in ff.nodes.values())
    ff.check()
    # a graph without nested graphs is returned as is
    plain = family_graphs()["ffnn"]
    assert plain.flattened() is plain


def test_flattened_passthrough_subgraph():
    inner = chain(("i", ir.Input((3,))), ("o", ir.Output((3,))))
    g = chain(("x", ir.Input((3,))), ("s", ir.Scale(ones(3))), ("sub", inner),
              ("t", ir.Scale(ones(3))), ("y", ir.Output((3,))))
    g.check()
    f = g.flattened()
    assert f.edges == [("x", "s"), ("s", "t"), ("t", "y")]


def walk_numpy(graph, x, steps=1):
    """A tiny numpy evaluator of a few kinds (independent of polyir's importers)."""

    class W(GraphWalker):
        def visit(self, name, node, v):
            if isinstance(node, ir.Output):
                return v["input"]
            if isinstance(node, ir.Affine):
                return node.weight @ v["input"] + node.bias
            if isinstance(node, ir.Linear):
                return node.weight @ v["input"]
            if isinstance(node, ir.Scale):
                return node.scale * v["input"]
            if isinstance(node, ir.Activation):
                return np.tanh(v["input"])
            raise NotImplementedError(type(node).__name__)

    w = W(graph)
    env = w.run({n: x for n in w.input_names})
    return env[w.output_names[0]]


def test_walker_sums_fan_in_and_matches_flattened():
    g = nested_graph()
    x = np.array([1.0, -2.0, 0.5])
    # by hand: fc(pre(x) + x) = W (2x) + b with W = ones, b = ones
    expected = np.tanh(np.ones((2, 3)) @ (2 * x) + 1)
    assert np.allclose(walk_numpy(g, x), expected)


def test_rule_table_lookup_names_node_and_direction(monkeypatch):
    from polyir.ir import walk
    monkeypatch.setattr(walk, "TABLES", dict(walk.TABLES))   # keep the coverage table clean
    table = RuleTable("demo-direction", label="Demo")

    @table(ir.Affine)
    def affine_rule(ctx, name, node, values):
        return ctx, name, type(node).__name__, values

    fc = ir.Affine(ones(1, 1), ones(1))
    assert table.apply("state", "fc", fc, {"input": 1}) == ("state", "fc", "Affine", {"input": 1})
    assert ir.Affine in table and ir.Linear not in table
    with pytest.raises(GraphError) as exc:
        table.lookup("l1", ir.LogicLayer([0], [0], [1]))
    assert "LogicLayer 'l1' has no Demo form" in str(exc.value)
    assert exc.value.node == "l1" and "Affine" in exc.value.fix


def test_zero_dimensional_parameters_keep_their_shape():
    """A scalar parameter stays 0-d (numpy's ascontiguousarray would silently make it (1,))."""
    import numpy as np
    from polyir import ir
    node = ir.Scale(np.float32(2.0))
    assert node.scale.shape == () and node.scale.dtype == np.float32
    src = np.arange(6, dtype=np.float32).reshape(2, 3)
    lin = ir.Linear(src)
    src[0, 0] = 99  # the node holds its own copy: mutating the caller's array changes nothing
    assert lin.weight[0, 0] == 0 and not lin.weight.flags.writeable
