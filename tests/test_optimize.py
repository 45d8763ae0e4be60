"""polyir.optimize: smaller logic graphs with bit-identical outputs.

Every check evaluates the graphs with a numpy evaluator written here (the 16 gates spelled out
from difflogic's order, GroupSum as counts), never with polyir's own backends."""
import numpy as np
import pytest
import torch

import polyir
import polyir.nn
from polyir import ir

from logic_reference import GATES, random_logic_net

# difflogic's gate order, written out independently of polyir


def evaluate(graph, *xs):
    """Input (bit) / LogicLayer / GroupSum / Output graphs on boolean arrays (batch, n)."""
    vals, pending = {}, list(graph.nodes)
    feeds = dict(zip(graph.inputs, xs))
    while pending:
        for name in list(pending):
            srcs = [e[0] for e in graph.edges if e[1] == name]
            if any(s not in vals for s in srcs):
                continue
            node = graph.nodes[name]
            x = vals[srcs[0]] if srcs else None
            if isinstance(node, ir.Input):
                v = np.asarray(feeds[name]).astype(bool)
            elif isinstance(node, ir.Output):
                v = x
            elif isinstance(node, ir.LogicLayer):
                v = np.stack([GATES[g](x[:, i], x[:, j]) for g, i, j in
                              zip(node.gate.tolist(), node.a.tolist(), node.b.tolist())], 1)
            elif isinstance(node, ir.GroupSum):
                counts = x.reshape(len(x), node.k, -1).sum(-1)
                v = (counts + node.beta) / node.tau
            else:
                raise AssertionError(type(node))
            vals[name] = v
            pending.remove(name)
    return [vals[o] for o in graph.outputs]


def gates(graph):
    return sum(n.gate.size for n in graph.nodes.values() if isinstance(n, ir.LogicLayer))


def random_net(seed, n_in=64, widths=(300, 300, 200), k=10, beta=0.0):
    return random_logic_net(seed, n_in, widths, k, tau=3.0, beta=beta)


def assert_same(g, h, n_in, seed=0, n=500):
    x = np.random.default_rng(seed).integers(0, 2, (n, n_in)).astype(bool)
    for y, z in zip(evaluate(g, x), evaluate(h, x)):
        np.testing.assert_array_equal(y, z)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_nets_shrink_and_agree(seed):
    g = random_net(seed, beta=2.0 if seed == 2 else 0.0)
    h = polyir.optimize(g)
    h.check()
    assert gates(h) < 0.8 * gates(g)
    assert_same(g, h, 64, seed)
    assert gates(polyir.optimize(h)) <= gates(h)


def test_hand_cases():
    # x0..x2 -> [NOT x0, x0, TRUE, NAND(x1, x2), AND(x1, x2), x2 (unread)]
    l1 = ir.LogicLayer([0, 0, 0, 1, 1, 2], [0, 0, 0, 2, 2, 2], [12, 3, 15, 14, 1, 5])
    # [AND(NOT x0, x0) = FALSE, OR(l1[3], l1[4]) = TRUE, AND(l1[1], TRUE) = x0, XOR(l1[0], l1[0])]
    l2 = ir.LogicLayer([0, 3, 1, 0], [1, 4, 2, 0], [1, 7, 1, 6])
    g = ir.Graph.sequential(l1, l2, ir.GroupSum(2), input_shape=(3,), input_elem="bit")
    h = polyir.optimize(g)
    h.check()
    assert_same(g, h, 3)
    x = np.array(list(np.ndindex(2, 2, 2)), bool)
    assert_same(g, h, 3)
    np.testing.assert_array_equal(evaluate(g, x)[0], evaluate(h, x)[0])
    # l1 keeps one pass-through of x0; l2: groups (FALSE, TRUE) and (x0, FALSE): one FALSE per
    # group folds away, no TRUE in group 1 -> beta stays 0
    assert h.nodes["logiclayer"].gate.tolist() == [3]
    assert h.nodes["logiclayer_1"].gate.size == 2
    assert h.nodes["groupsum"].beta == 0.0


def test_constant_bits_become_the_group_offset():
    l1 = ir.LogicLayer([0, 1, 0, 1], [1, 0, 1, 0], [15, 6, 15, 1])  # TRUE, XOR, TRUE, AND
    g = ir.Graph.sequential(l1, ir.GroupSum(2, beta=1.0), input_shape=(2,), input_elem="bit")
    h = polyir.optimize(g)
    assert h.nodes["logiclayer"].gate.tolist() == [6, 1]
    assert h.nodes["groupsum"].beta == 2.0
    x = np.array(list(np.ndindex(2, 2)), bool)
    np.testing.assert_array_equal(evaluate(g, x)[0], evaluate(h, x)[0])


def test_fan_out_and_exact_outputs_keep_their_bits():
    rng = np.random.default_rng(5)
    g = ir.Graph()
    g.add("x", ir.Input((16,), elem="bit"))
    g.add("l1", ir.LogicLayer(rng.integers(0, 16, 40), rng.integers(0, 16, 40),
                              rng.integers(0, 16, 40)))
    g.add("l2", ir.LogicLayer(rng.integers(0, 40, 30), rng.integers(0, 40, 30),
                              rng.integers(0, 16, 30)))
    g.add("l3", ir.LogicLayer(rng.integers(0, 40, 20), rng.integers(0, 40, 20),
                              rng.integers(0, 16, 20)))
    g.add("bits", ir.Output((30,)))
    g.add("sum", ir.GroupSum(5))
    g.add("y", ir.Output((5,)))
    for e in [("x", "l1"), ("l1", "l2"), ("l1", "l3"), ("l2", "bits"), ("l3", "sum"),
              ("sum", "y")]:
        g.connect(*e)
    g.check()
    h = polyir.optimize(g)
    h.check()
    assert h.nodes["l2"].gate.size == 30  # read by an Output: width and order stay
    assert h.nodes["l1"].gate.size < 40
    assert_same(g, h, 16)


def test_trained_net():
    torch.manual_seed(0)
    model = torch.nn.Sequential(polyir.nn.LogicLayer(32, 200, seed=0),
                                polyir.nn.LogicLayer(200, 200, seed=1),
                                polyir.nn.GroupSum(4, tau=2.0))
    x = torch.randint(0, 2, (256, 32)).float()
    target = (x[:, :4].sum(1) > 1).long() + 2 * (x[:, 4] > 0).long()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = polyir.export(model.eval(), x[:2])
    h = polyir.optimize(g)
    h.check()
    assert gates(h) < gates(g)
    xb = np.random.default_rng(3).integers(0, 2, (400, 32)).astype(bool)
    np.testing.assert_array_equal(evaluate(g, xb)[0], evaluate(h, xb)[0])
    with torch.no_grad():  # and the trained torch model itself
        np.testing.assert_allclose(model(torch.from_numpy(xb).float()).numpy(),
                                   evaluate(h, xb)[0], rtol=0, atol=1e-6)


def test_other_kinds_pass_untouched():
    g = ir.Graph.sequential(ir.Affine(np.eye(3, dtype=np.float32), np.zeros(3, np.float32)))
    h = polyir.optimize(g)
    assert set(h.nodes) == set(g.nodes) and h.nodes["affine"] is g.nodes["affine"]


def test_cli_optimize_writes_a_smaller_equal_graph(tmp_path, capsys):
    from polyir.cli.main import main
    g = random_net(7)
    polyir.save(g, tmp_path / "g.h5")
    assert main(["optimize", str(tmp_path / "g.h5"), str(tmp_path / "o.h5"), "--json"]) == 0
    import json
    data = json.loads(capsys.readouterr().out)
    h = polyir.load(tmp_path / "o.h5")
    assert data["gates"] == {"before": gates(g), "after": gates(h)} and gates(h) < gates(g)
    assert_same(g, h, 64)
    assert main(["optimize", str(tmp_path / "g.h5"), str(tmp_path / "o.h5")]) == 0
    assert "total" in capsys.readouterr().out


def test_compile_applies_it_unless_told_not_to():
    g = random_net(3)
    x = np.random.default_rng(4).integers(0, 2, (300, 64)).astype(np.uint8)
    expected = evaluate(g, x.astype(bool))[0]
    on, off = polyir.compile(g, "c"), polyir.compile(g, "c", optimize=False)
    assert on.program.gate_count() < off.program.gate_count() == gates(g)
    np.testing.assert_array_equal(on(x), expected.astype(np.float32))
    np.testing.assert_array_equal(off(x), expected.astype(np.float32))
