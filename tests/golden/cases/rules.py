"""RuleSet: propositional and relational rule sets against numpy evaluations of the semantics
(DESIGN.md): per grounding z = T_rule(sum of weighted body values), a_r(h) = Agg_r(z), v(h) =
T_atom(sum_r a_r(h)); an underivable query is 0. Besides these, a recursive rule set evaluated over
its (acyclic) ground network, and PyNeuraLogic's printed GCNConv template (template facts, an
atom combination, a function on a literal) against the closed-form GCN layer."""
import numpy as np

import polyir as P
from golden import case, golden

TOL = dict(rtol=1e-5, atol=1e-6)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def relational_graph(rs, inputs, out_dim):
    """Input nodes (one per relational input predicate, `inputs`: name -> (dim, arity)) -> rs ->
    Output."""
    g = P.Graph()
    for name, (dim, arity) in inputs.items():
        g.add(name, P.Input((dim,), elem="relation", arity=arity))
    g.add("rules", rs)
    for name in inputs:
        g.connect(name, "rules", name)
    g.add("y", P.Output((out_dim,)))
    g.connect("rules", "y")
    return g


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
    g = relational_graph(rs, {"feat": (2, 1), "edge": (1, 2)}, 1)
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


@golden
def ruleset_recursive_path(rng):
    """A recursive rule over an acyclic graph, evaluated over its ground network:
    path(X, Y) :- edge(X, Y).   path(X, Z) :- 0.5 path(X, Y), *edge(Y, Z).   (sum, tanh atoms)
    out(X) :- path(0, X)-style queries: the values of path(0, z) for every z."""
    from polyir.ir.rules_text import parse_rules
    n = 6
    edges = np.array([[i, j] for i in range(n) for j in range(i + 1, n) if rng.random() < 0.5])
    vals = rng.uniform(0.2, 1.0, size=(len(edges), 1)).astype(np.float32)
    rs = parse_rules("path(X, Y) :- edge(X, Y). [aggregation=sum]\n"
                     "path(X, Z) :- 0.5 path(X, Y), *edge(Y, Z). [aggregation=sum]\n"
                     "path/2 [transformation=tanh]\n"
                     "?- " + ", ".join(f"path(0, {z})" for z in range(1, n)) + ".")
    g = relational_graph(rs, {"edge": (1, 2)}, n - 1)
    e = {(int(a), int(b)): float(v) for (a, b), v in zip(edges, vals[:, 0])}
    path = {}
    for z in range(1, n):  # z in topological order: every path(0, y) with y < z is known
        total, derived = 0.0, False
        if (0, z) in e:
            total, derived = total + e[(0, z)], True
        for y in range(1, z):
            if (0, y) in path and (y, z) in e:
                total, derived = total + 0.5 * path[(0, y)], True
        if derived:
            path[(0, z)] = np.tanh(total)
    expected = np.array([[path.get((0, z), 0.0) for z in range(1, n)]])
    case("ruleset_recursive_path", g, [(vals, edges)], expected, **TOL)


@golden
def ruleset_pyneuralogic_gcnconv(rng):
    """The template PyNeuraLogic 0.9.2 prints for GCNConv(3, 2): a template fact for the self
    loops, an atom combination (product of two degree counts), a function on a literal (sqrt),
    a product combination. It is the GCN layer h = (D^-1/2 (A + I) D^-1/2)^T X W^T."""
    from polyir.ir.rules_text import parse_rules
    n = 5
    w = rng.normal(size=(2, 3)).astype(np.float32)
    edges = np.array([(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2), (3, 4), (4, 3)])
    x = rng.normal(size=(n, 3)).astype(np.float32)
    text = ("<1.0> h__edge(I, I).\nh__edge(I, J) :- edge(I, J).\n"
            "h__edge_count(I, J) :- h__edge(X, J). [aggregation=sum]\n"
            "h__edge_count(I, J) :- h__edge(X, I). [aggregation=sum]\n"
            "h__edge_count/2 [transformation=inverse, combination=product]\n"
            "$w={2, 3} h(I) :- feat(J), h__edge(J, I), sqrt(h__edge_count(J, I)). "
            "[combination=product, aggregation=sum]\n"
            "?- " + ", ".join(f"h({i})" for i in range(n)) + ".")
    rs = parse_rules(text, dims={"feat": 3})
    rs = rs.replace(weights={**rs.weights, "w": w})
    g = relational_graph(rs, {"feat": (3, 1), "edge": (1, 2)}, 2 * n)
    a = np.eye(n)
    a[edges[:, 0], edges[:, 1]] = 1.0
    deg = a.sum(0)
    norm = a / np.sqrt(np.outer(deg, deg))
    expected = (norm.T @ x.astype(np.float64) @ w.T.astype(np.float64)).reshape(1, -1)
    case("ruleset_pyneuralogic_gcnconv", g, [(x, np.arange(n)[:, None]), (None, edges)],
         expected, **TOL)
