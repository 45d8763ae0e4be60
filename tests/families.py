"""Test fixtures: one small, valid graph of each family of kinds (feed-forward, convolutional,
logic, logic convolution, leaky integrators with a recurrent edge, relational rules)."""
from __future__ import annotations

import numpy as np

from polyir import ir


def family_graphs(seed: int = 0) -> dict[str, ir.Graph]:
    """A small, valid graph of every family of kinds, built node by node."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    graphs = {}
    graphs["ffnn"] = ir.Graph.sequential(
        ir.Affine(rng.normal(size=(8, 4)).astype(f32), rng.normal(size=8).astype(f32)),
        ir.Activation("tanh"),
        ir.Affine(rng.normal(size=(1, 8)).astype(f32), np.zeros(1, f32)),
        ir.Activation("sigmoid"))
    graphs["cnn"] = ir.Graph.sequential(
        ir.Conv2d(None, rng.normal(size=(4, 1, 3, 3)).astype(f32), 1, 1, 1, 1, np.zeros(4, f32)),
        ir.Activation("relu"), ir.AvgPool2d((2, 2), (2, 2)), ir.Flatten(start_dim=0),
        ir.Affine(rng.normal(size=(3, 4 * 4 * 4)).astype(f32), np.zeros(3, f32)),
        input_shape=(1, 8, 8))
    width = 24
    a = rng.integers(0, 15, width)
    b = rng.integers(0, 15, width)
    graphs["logic"] = ir.Graph.sequential(
        ir.Binarize(np.array([0.25, 0.5, 0.75], f32)),
        ir.LogicLayer(a, b, rng.integers(0, 16, width)),
        ir.LogicLayer(rng.integers(0, width, 12), rng.integers(0, width, 12),
                      rng.integers(0, 16, 12)),
        ir.GroupSum(3, tau=2.0), input_shape=(5,))
    graphs["logic_conv"] = ir.Graph.sequential(
        ir.LogicTree2d(np.stack([rng.integers(0, 2, (4, 4)), rng.integers(0, 3, (4, 4)),
                                 rng.integers(0, 3, (4, 4))], -1), rng.integers(0, 16, (4, 3)),
                       (3, 3)),
        ir.OrPool2d((2, 2), (2, 2)), ir.Flatten(start_dim=0),
        ir.LogicLayer(rng.integers(0, 36, 10), rng.integers(0, 36, 10), rng.integers(0, 16, 10)),
        ir.GroupSum(2), input_shape=(2, 8, 8), input_elem="bit")
    n = 5
    g = ir.Graph(metadata={"dt": 1e-3})
    g.add("input", ir.Input((3,)))
    g.add("fc", ir.Affine(rng.normal(size=(n, 3)).astype(f32), np.zeros(n, f32)))
    g.add("lif", ir.CubaLIF(tau_syn=np.full(n, 5e-3, f32), tau_mem=np.full(n, 1e-2, f32),
                            r=np.ones(n, f32), v_leak=np.zeros(n, f32),
                            v_threshold=np.ones(n, f32)))
    g.add("rec", ir.Linear(0.1 * rng.normal(size=(n, n)).astype(f32)))
    g.add("li", ir.LI(tau=np.full(2, 2e-2, f32), r=np.ones(2, f32), v_leak=np.zeros(2, f32)))
    g.add("readout", ir.Linear(rng.normal(size=(2, n)).astype(f32)))
    g.add("output", ir.Output((2,)))
    for e in [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "readout"),
              ("readout", "li"), ("li", "output")]:
        g.connect(*e)
    graphs["leaky_integrators"] = g
    rules = ir.RuleSet(
        predicates=[ir.Predicate("feat", arity=1, dim=2, input=True),
                    ir.Predicate("edge", arity=2, dim=1, input=True),
                    ir.Predicate("h", arity=1, dim=2, transformation="sigmoid"),
                    ir.Predicate("out", arity=0, dim=1)],
        rules=[ir.Rule("h", ("X",), (ir.Literal("feat", ("Y",), weight="w1"),
                                     ir.Literal("edge", ("X", "Y"), hidden=True)),
                       transformation="tanh", aggregation="avg"),
               ir.Rule("out", (), (ir.Literal("h", ("X",), weight="w2"),), aggregation="avg")],
        weights={"w1": rng.normal(size=(2, 2)).astype(f32), "w2": rng.normal(size=(1, 2)).astype(f32)},
        queries=[ir.Query("out")])
    rg = ir.Graph()
    rg.add("feat", ir.Input((2,), elem="relation", arity=1))
    rg.add("edge", ir.Input((1,), elem="relation", arity=2))
    rg.add("rules", rules)
    rg.add("output", ir.Output((1,)))
    rg.connect("feat", "rules", "feat")
    rg.connect("edge", "rules", "edge")
    rg.connect("rules", "output")
    graphs["rules"] = rg
    for g in graphs.values():
        g.check()
    return graphs
