"""RuleSet: propositional and relational rule sets against numpy evaluations of the semantics
(DESIGN.md): per grounding z = T_rule(sum of weighted body values), a_r(h) = Agg_r(z), v(h) =
T_atom(sum_r a_r(h)); an underivable query is 0. Only sigmoid / tanh / identity transformations
and avg / sum aggregations are used."""
import numpy as np

import polyir as P
from golden import case, golden

TOL = dict(rtol=1e-5, atol=1e-6)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@golden
def ruleset_propositional(rng):
    """h :- w1 x.  h :- w3 x. [tanh]  out :- w2 h. [sigmoid atom]; one grounding per rule, so
    avg is the value itself and the two rules for h add up."""
    w1, w3 = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)
    w2 = rng.normal(size=(1, 2)).astype(np.float32)
    rs = P.RuleSet(
        predicates=[P.Predicate("x", dim=3, input=True),
                    P.Predicate("h", dim=2, transformation="sigmoid"),
                    P.Predicate("out", dim=1, transformation="tanh")],
        rules=[P.Rule("h", (), (P.Literal("x", (), weight="w1"),)),
               P.Rule("h", (), (P.Literal("x", (), weight="w3"),), transformation="tanh"),
               P.Rule("out", (), (P.Literal("h", (), weight="w2"),), aggregation="sum")],
        weights={"w1": w1, "w2": w2, "w3": w3}, queries=[P.Query("out")])
    g = P.Graph()
    g.add("x", P.Input((3,)))
    g.add("rules", rs)
    g.add("y", P.Output((1,)))
    g.connect("x", "rules", "x")
    g.connect("rules", "y")
    x = rng.normal(size=(7, 3)).astype(np.float32)
    x64 = x.astype(np.float64)
    h = _sigmoid(x64 @ w1.T + np.tanh(x64 @ w3.T))
    case("ruleset_propositional", g, x, np.tanh(h @ w2.T.astype(np.float64)), **TOL)


@golden
def ruleset_relational(rng):
    """h(X) :- w1 feat(Y), edge(X, Y)*. [tanh, avg]   out :- w2 h(X). [sum], sigmoid atom.
    Constant 4 has no feature and 5 no edge: h(5) is underivable, h(X) averages over the
    neighbours Y that have a feature."""
    w1 = rng.normal(size=(3, 2)).astype(np.float32)
    w2 = rng.normal(size=(1, 3)).astype(np.float32)
    rs = P.RuleSet(
        predicates=[P.Predicate("feat", arity=1, dim=2, input=True),
                    P.Predicate("edge", arity=2, dim=1, input=True),
                    P.Predicate("h", arity=1, dim=3),
                    P.Predicate("out", arity=0, dim=1, transformation="sigmoid")],
        rules=[P.Rule("h", ("X",), (P.Literal("feat", ("Y",), weight="w1"),
                                    P.Literal("edge", ("X", "Y"), hidden=True)),
                      transformation="tanh", aggregation="avg"),
               P.Rule("out", (), (P.Literal("h", ("X",), weight="w2"),), aggregation="sum")],
        weights={"w1": w1, "w2": w2}, queries=[P.Query("out")])
    g = P.Graph()
    g.add("feat", P.Input((2,), elem="relation", arity=1))
    g.add("edge", P.Input((1,), elem="relation", arity=2))
    g.add("rules", rs)
    g.add("y", P.Output((1,)))
    g.connect("feat", "rules", "feat")
    g.connect("edge", "rules", "edge")
    g.connect("rules", "y")
    feat = rng.normal(size=(4, 2)).astype(np.float32)
    feat_args = np.array([[0], [1], [2], [3]])
    edges = np.array([[0, 1], [0, 2], [1, 0], [2, 4], [3, 3], [3, 1], [1, 2]])
    feats = {int(a[0]): feat[i].astype(np.float64) for i, a in enumerate(feat_args)}
    h = {}
    for x in sorted({int(e[0]) for e in edges}):
        zs = [np.tanh(w1 @ feats[int(y)]) for xx, y in edges if xx == x and int(y) in feats]
        if zs:
            h[x] = np.mean(zs, 0)
    out = _sigmoid(sum(w2.astype(np.float64) @ v for v in h.values()))
    case("ruleset_relational", g, [(feat, feat_args), (None, edges)], out.reshape(1, 1), **TOL)
