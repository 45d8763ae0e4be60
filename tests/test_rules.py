"""RuleLayer: every semantic rule of docs/kinds/rules.md on hand-computed cases, the seed XOR
example, a GCN template against its closed form, IR / file round trips, and (when installed)
PyNeuraLogic."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import polyir
import pyneuralogic
from polyir import GraphError, ir
from polyir.ir.rules_text import parse_rules
from polyir.nn.rule_builder import Aggregation, Combination, R, Template, Transformation, V
from polyir.nn.rules import RuleLayer


def rel(values, args):
    return (None if values is None else torch.tensor(values, dtype=torch.float64),
            np.array(args, dtype=np.int64))


def run(text, inputs, **kw):
    layer = RuleLayer(text, **kw).double()
    return layer(inputs).detach().numpy()


# --- aggregation, combination, transformations -----------------------------------------------
F3 = rel([[3.0, -5.0], [1.0, 1.0], [0.0, 4.0]], [[1], [2], [3]])
E3 = rel(None, [[0, 1], [0, 2], [0, 3], [9, 3]])


@pytest.mark.parametrize("agg, h0", [
    ("avg", [4 / 3, 0.0]),      # (3+1+0)/3, (-5+1+4)/3
    ("sum", [4.0, 0.0]),
    ("max", [0.0, 4.0]),        # f(3): element sums -2, 2, 4 -> the whole [0, 4], not [3, 4]
    ("min", [3.0, -5.0]),       # smallest element sum: f(1)
    ("count", [3.0]),           # PyNeuraLogic's count: the number of groundings, one scalar
])
def test_aggregations(agg, h0):
    out = run(f"h(X) :- f(Y), *e(X, Y). [aggregation={agg}]\n?- h(0), h(9), h(4).",
              {"f": F3, "e": E3}, dims={"f": 2})
    d = len(h0)
    np.testing.assert_allclose(out[0, :d], h0, rtol=1e-12)
    np.testing.assert_allclose(out[0, d:2 * d], [1.0] if agg == "count" else [0.0, 4.0])
    np.testing.assert_array_equal(out[0, 2 * d:], [0.0] * d)  # h(4): underivable -> 0.0


def test_max_gradient_flows_only_to_the_chosen_grounding():
    layer = RuleLayer("h :- f(Y). [aggregation=max]\n?- h.", dims={"f": 2}).double()
    vals = torch.tensor([[3.0, -5.0], [1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    out = layer({"f": (vals, [[1], [2]])})
    out.sum().backward()
    np.testing.assert_array_equal(out.detach().numpy(), [[1.0, 1.0]])
    np.testing.assert_array_equal(vals.grad.numpy(), [[0, 0], [1, 1]])


@pytest.mark.parametrize("comb, expected", [
    ("sum", [1 + 10, 2 + 10]), ("avg", [5.5, 6.0]),
    # PyNeuraLogic's max / min of two values: the whole value with the larger (smaller) element
    # sum: [1, 2] sums to 3 < 10, so max picks 10 (broadcast), min picks [1, 2]
    ("max", [10, 10]), ("min", [1, 2]),
    ("elproduct", [10, 20]), ("product", [10, 20]), ("concat", [1, 2, 10]),
    ("crossum", [11, 12]),   # every pair of entries summed: a[i] + b[j], a's index outermost
])
def test_combinations(comb, expected):
    # a (2-vector) and b (1-vector: broadcast) combined in one grounding
    text = f"h :- a, b. [combination={comb}]\n?- h."
    out = run(text, {"a": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([[10.0]])},
              dims={"a": 2, "b": 1})
    np.testing.assert_allclose(out[0], expected)


def test_max_min_combination_pick_whole_vectors():
    # [1, 5] vs [3, 2]: sums 6 and 5, so max is [1, 5] (not the elementwise [3, 5])
    x = {"a": torch.tensor([[1.0, 5.0]]), "b": torch.tensor([[3.0, 2.0]])}
    assert run("h :- a, b. [combination=max]\n?- h.", x, dims={"a": 2, "b": 2})[0].tolist() == [1, 5]
    assert run("h :- a, b. [combination=min]\n?- h.", x, dims={"a": 2, "b": 2})[0].tolist() == [3, 2]


def test_cosim_softmax_combinations():
    a, b = [1.0, 2.0, 2.0], [2.0, 0.0, 1.0]
    x = {"a": torch.tensor([a]), "b": torch.tensor([b])}
    out = run("h :- a, b. [combination=cossim]\n?- h.", x, dims={"a": 3, "b": 3})
    assert out[0, 0] == pytest.approx(4.0 / (3.0 * math.sqrt(5.0)), rel=1e-12)
    # a softmax over several scalars: one entry per literal
    s = {"p": torch.tensor([[1.0]]), "q": torch.tensor([[3.0]])}
    out = run("h :- p, q. [combination=softmax]\n?- h.", s)
    np.testing.assert_allclose(out[0], [1 / (1 + math.e ** 2), 1 / (1 + math.e ** -2)], rtol=1e-12)


# PyNeuraLogic's element-wise transformations (its Java backend's definitions), by hand
TRANSFORMS = {
    "identity": lambda x: x, "sigmoid": lambda x: 1 / (1 + math.exp(-x)), "tanh": math.tanh,
    "relu": lambda x: max(x, 0.0), "leaky_relu": lambda x: x if x > 0 else 0.01 * x,
    "exp": math.exp, "sqrt": math.sqrt, "log": math.log, "inverse": lambda x: 1 / x,
    "reverse": lambda x: 1 - x,                  # 1 - x, not -x
    "signum": lambda x: 1.0 if x > 0 else 0.0,   # a step: 0 for negatives and 0
    "sign": lambda x: float(np.sign(x)),         # polyir's own three-valued sign
    "lukasiewicz": lambda x: 1 / (1 + math.exp(-6 * x - 0.5)),  # a steep, shifted sigmoid
}


def test_lukasiewicz_is_pyneuralogics_sigmoid():
    # the values PyNeuraLogic 0.9.2 gives for [-1.5, 0, 0.25, 2], to the 2 digits it prints
    out = run("h :- x. [transformation=lukasiewicz]\n?- h.",
              {"x": torch.tensor([[-1.5, 0.0, 0.25, 2.0]], dtype=torch.float64)}, dims={"x": 4})
    np.testing.assert_allclose(out[0], [2.03e-4, 0.6225, 0.8808, 1.0], atol=5e-5)


@pytest.mark.parametrize("fn", ["sqrt", "log"])
def test_sqrt_log_of_negative_is_an_error(fn):
    with pytest.raises(GraphError, match=f"{fn} of a negative value"):
        run(f"h :- x. [transformation={fn}]\n?- h.", {"x": torch.tensor([[-0.5]])})


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transformations_elementwise(name):
    xs = [0.3, 1.7, 2.5] if name in ("sqrt", "log", "inverse") else [-1.5, 0.0, 0.25, 2.0]
    out = run(f"h :- x. [transformation={name}]\n?- h.",
              {"x": torch.tensor([xs], dtype=torch.float64)}, dims={"x": len(xs)})
    np.testing.assert_allclose(out[0], [TRANSFORMS[name](v) for v in xs], rtol=1e-12)


def test_softmax_transformation_is_over_the_vector():
    out = run("h :- x.\nh/0 [transformation=softmax]\n?- h.", {"x": torch.tensor([[0.0, 1.0, 2.0]])},
              dims={"x": 3})
    e = np.exp([0.0, 1.0, 2.0])
    np.testing.assert_allclose(out[0], e / e.sum(), rtol=1e-12)


def test_rule_vs_atom_transformation():
    f = {"f": rel([[1.0], [4.0]], [[1], [2]])}
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # the rule's transformation acts per grounding, before aggregation...
    out = run("h :- f(Y). [transformation=sigmoid]\n?- h.", f)
    assert out[0, 0] == pytest.approx((sig(1) + sig(4)) / 2, rel=1e-12)
    # ...the predicate's after the rules are summed
    out = run("h :- f(Y).\nh/0 [transformation=sigmoid]\n?- h.", f)
    assert out[0, 0] == pytest.approx(sig(2.5), rel=1e-12)


# --- weights ----------------------------------------------------------------------------------
def test_head_weight_vs_body_weight():
    f = {"f": rel([[1.0, 2.0], [-1.0, 0.0]], [[1], [2]])}
    sig = lambda v: 1 / (1 + np.exp(-np.asarray(v)))  # noqa: E731
    wb = np.array([[1.0, 0.0], [0.0, 2.0]])
    wh = np.array([[1.0, 2.0]])
    # body weight: inside the rule neuron, before its transformation
    out = run("g :- [[1.0, 0.0], [0.0, 2.0]] f(Y). [transformation=sigmoid]\n?- g.", f,
              dims={"g": 2})
    np.testing.assert_allclose(out[0], (sig([1, 4]) + sig([-1, 0])) / 2, rtol=1e-12)
    # head weight: after aggregation, outside the rule's transformation
    out = run("[[1.0, 2.0]] g :- f(Y). [transformation=sigmoid]\n?- g.", f)
    expected = wh @ ((sig([1, 2]) + sig([-1, 0])) / 2)
    np.testing.assert_allclose(out[0], expected, rtol=1e-12)
    # both, and a scalar weight multiplies elementwise
    out = run("[[1.0, 2.0]] g :- [[1.0, 0.0], [0.0, 2.0]] f(Y), 0.5 f(Y).\n?- g.", f)
    per = [wb @ [1, 2] + 0.5 * np.array([1, 2]), wb @ [-1, 0] + 0.5 * np.array([-1, 0])]
    np.testing.assert_allclose(out[0], wh @ ((per[0] + per[1]) / 2), rtol=1e-12)


def test_rules_with_one_head_add_up():
    out = run("2.0 h :- a.\n3.0 h :- b.\n?- h.", {"a": torch.ones(1, 1), "b": torch.ones(1, 1)})
    assert out[0, 0] == 5.0


def test_shared_and_fixed_weights():
    text = "$w=[[2.0]] a :- x.\n$w b :- y.\nout :- a, <0.5> b.\n?- out."
    layer = RuleLayer(text).double()
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["weights.w"]  # shared: one parameter; fixed 0.5: a buffer
    assert any(n.startswith("fixed_") for n, _ in layer.named_buffers())
    x, y = torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([[3.0]], dtype=torch.float64)
    out = layer({"x": x, "y": y})
    assert out.item() == 2 * 1 + 0.5 * (2 * 3)
    out.sum().backward()
    assert layer.weights["w"].grad.item() == 1 + 0.5 * 3  # d out / d w, through both uses
    rs = layer.to_ir()
    assert len(rs.fixed) == 1 and rs.weights[rs.fixed[0]].reshape(-1).tolist() == [0.5]


def test_valueless_fact_is_one_and_hidden_vs_visible():
    facts = {"f": rel([[1.0], [3.0]], [[1], [2]]), "e": rel(None, [[0, 1], [0, 2]])}
    # visible e(X, Y) adds its value 1.0 to each grounding: avg(1+1, 3+1)
    assert run("h(X) :- f(Y), e(X, Y).\n?- h(0).", facts)[0, 0] == 3.0
    # hidden *e only selects groundings: avg(1, 3)
    assert run("h(X) :- f(Y), *e(X, Y).\n?- h(0).", facts)[0, 0] == 2.0
    assert run("h :- a.\n?- h.", {"a": (None, np.zeros((1, 0), np.int64))})[0, 0] == 1.0


def test_negation_as_failure_and_underivable_query():
    facts = {"f": rel([[2.0], [5.0]], [[1], [2]]), "g": rel(None, [[2]])}
    out = run("h(X) :- f(X), !g(X).\n?- h(1), h(2).", facts)
    np.testing.assert_array_equal(out[0], [2.0, 0.0])  # h(2) is blocked by g(2): 0.0


def test_duplicates_merged_unless_duplicit_grounding():
    facts = {"f": rel([[1.0], [4.0]], [[1], [2]]), "e": rel(None, [[0, 1], [5, 1], [0, 2]])}
    assert run("h :- f(Y), *e(X, Y).\n?- h.", facts)[0, 0] == 2.5          # avg(1, 4)
    assert run("h :- f(Y), *e(X, Y). [duplicit_grounding=true]\n?- h.",
               facts)[0, 0] == 2.0                                         # avg(1, 1, 4)
    # one atom twice in one body counts twice in that grounding
    assert run("h :- f(Y), f(Y).\n?- h.", {"f": facts["f"]})[0, 0] == 5.0  # avg(2, 8)


def test_alldiff_builtin():
    facts = {"f": rel([[1.0], [10.0], [100.0]], [[1], [2], [3]])}
    out = run("h(X) :- f(X), f(Y), @alldiff(X, Y).\n?- h(1).", facts)
    assert out[0, 0] == 56.0  # avg(1 + 10, 1 + 100)


# --- input styles and batching ----------------------------------------------------------------
def test_batched_list_and_triple_forms_agree_and_empty_samples_give_zero():
    text = "h(X) :- [[1.0, -1.0]] f(Y), e(X, Y). [combination=elproduct]\nout :- h(X).\n?- out."
    layer = RuleLayer(text, dims={"f": 2}).double()
    rng = np.random.default_rng(0)
    samples = []
    for n in (3, 5, 1):
        src, dst = rng.integers(0, n, 6), rng.integers(0, n, 6)
        pairs = sorted({(int(a), int(b)) for a, b in zip(src, dst)})
        samples.append({"f": (torch.tensor(rng.normal(size=(n, 2))), np.arange(n)[:, None]),
                        "e": (torch.tensor(rng.random((len(pairs), 1))), np.array(pairs))})
    one_by_one = torch.cat([layer(s) for s in samples])
    batched = layer(samples + [{"f": (torch.zeros(0, 2, dtype=torch.float64),
                                      np.zeros((0, 1), np.int64)),
                                "e": (torch.zeros(0, 1, dtype=torch.float64),
                                      np.zeros((0, 2), np.int64))}])
    torch.testing.assert_close(batched[:3], one_by_one, rtol=1e-12, atol=0)
    assert batched[3].item() == 0.0
    misses = layer.cache.misses
    layer(samples)
    layer(samples)
    assert layer.cache.misses == misses + 1  # the repeated structure grounds once


def test_input_errors_name_the_predicate():
    layer = RuleLayer("{1, 2} h :- x.")
    with pytest.raises(GraphError, match="'x'.*expected \\(batch, 2\\)"):
        layer(torch.zeros(4, 3))
    layer2 = RuleLayer("h(X) :- f(X).\n?- h(1).")
    with pytest.raises(GraphError, match="do not match"):
        layer2({"g": (None, [[1]])})
    with pytest.raises(GraphError, match="integer constants"):
        layer2({"f": (None, np.array([[0.5]]))})
    with pytest.raises(polyir.FormatError, match="cosim compares two literals"):
        RuleLayer("h :- a, b, c. [combination=cosim]")
    with pytest.raises(polyir.FormatError, match="no fixed dimension"):
        RuleLayer("h :- a. [aggregation=softmax]")


# --- the seed example -------------------------------------------------------------------------
def xor_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 8, bias=False), nn.Tanh(),
                         RuleLayer(Template([R.xor[1, 8] <= R.xy])), nn.Tanh())


XOR_X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])


@pytest.fixture(scope="module")
def trained_xor():
    model = xor_model()
    rule_w = model[2].weights["w0"]
    before = rule_w.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(600):
        opt.zero_grad()
        loss = ((model(XOR_X) - XOR_Y) ** 2).mean()
        loss.backward()
        opt.step()
    assert not torch.equal(before, rule_w.detach())  # the rule weight was trained
    return model


def test_seed_xor_learns(trained_xor):
    out = trained_xor(XOR_X).detach()
    assert torch.equal((out > 0.5).float(), XOR_Y), out
    assert float(((out - XOR_Y) ** 2).mean()) < 0.01


def test_seed_xor_rules_ir_save_load(trained_xor, tmp_path):
    layer = trained_xor[2]
    rs = layer.to_ir()
    g = ir.Graph()
    g.add("xy", ir.Input((8,)))
    g.add("rules", rs)
    g.add("out", ir.Output((1,)))
    g.connect("xy", "rules", "xy")
    g.connect("rules", "out")
    path = tmp_path / "xor_rules.h5"
    polyir.save(g, path)
    back = polyir.load(path)
    assert back == g
    again = RuleLayer.from_ir(back.nodes["rules"])
    h = torch.tanh(trained_xor[0](XOR_X))
    assert torch.equal(again(h), layer(h))
    assert again.to_ir() == rs


def test_seed_xor_export_save_load_reimport(trained_xor, tmp_path):
    """The seed XOR model through polyir.export / save / load / to_torch (with the exporter's
    RuleLayer handler)."""
    try:
        import polyir.exporters.fx  # noqa: F401
        import polyir.exporters.handlers.rules  # noqa: F401  (registers RuleLayer)
        import polyir.importers.torch  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"export / to_torch not available yet: {exc}")
    trained_xor.eval()
    g = polyir.export(trained_xor, XOR_X)
    assert any(isinstance(k, ir.RuleSet) for k in g.nodes.values())
    path = tmp_path / "xor.h5"
    polyir.save(g, path)
    m = polyir.to_torch(polyir.load(path))
    assert torch.equal(m(XOR_X), trained_xor(XOR_X))


# --- GCN template vs closed form --------------------------------------------------------------
GCN = """\
h(X) :- $w={4, 3} feat(Y), edge(X, Y). [combination=elproduct, aggregation=sum]
?- h(0).
"""
# The normalisation lives in the edge facts: edge(X, Y) for every nonzero of A + I carries the
# value 1 / sqrt(d_X d_Y) (d = row sums of A + I); elproduct multiplies it into W feat(Y) and sum
# aggregation adds the neighbours: h = D^-1/2 (A + I) D^-1/2 X W^T.


def random_graph(rng, n, p=0.3):
    a = np.triu(rng.random((n, n)) < p, 1)
    a = (a | a.T).astype(np.float64)
    ahat = a + np.eye(n)
    d = ahat.sum(1)
    norm = ahat / np.sqrt(np.outer(d, d))
    i, j = np.nonzero(ahat)
    return norm, np.stack([i, j], 1), norm[i, j][:, None]


def test_gcn_template_equals_closed_form_batched():
    rng = np.random.default_rng(0)
    layer = RuleLayer(GCN).double()
    w = layer.weights["w"].detach().numpy()
    graphs = [random_graph(rng, n) for n in (5, 9, 7, 12)]
    feats = [rng.normal(size=(len(g[0]), 3)) for g in graphs]
    vals, args, smp, evals, eargs, esmp = [], [], [], [], [], []
    for s, ((norm, pairs, coef), x) in enumerate(zip(graphs, feats)):
        vals.append(x)
        args.append(np.arange(len(x))[:, None])
        smp.append(np.full(len(x), s))
        evals.append(coef)
        eargs.append(pairs)
        esmp.append(np.full(len(pairs), s))
    inputs = {"feat": (torch.tensor(np.concatenate(vals)), np.concatenate(args), np.concatenate(smp)),
              "edge": (torch.tensor(np.concatenate(evals)), np.concatenate(eargs),
                       np.concatenate(esmp))}
    values, hargs, hsample = layer.atoms(inputs, predicate="h")
    for s, ((norm, _, _), x) in enumerate(zip(graphs, feats)):
        expected = norm @ x @ w.T
        mine = np.zeros_like(expected)
        sel = (hsample == s).numpy()
        mine[hargs[sel, 0].numpy()] = values[sel].detach().numpy()
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-12)
    # the query h(0) of each graph is row 0 of its closed form
    out = layer(inputs).detach().numpy()
    for s, ((norm, _, _), x) in enumerate(zip(graphs, feats)):
        np.testing.assert_allclose(out[s], (norm @ x @ w.T)[0], rtol=1e-12)


def test_two_layer_gcn_with_readout_and_gradients():
    text = """\
h1(X) :- $w1={5, 3} feat(Y), edge(X, Y). [combination=elproduct, aggregation=sum]
h1/1 [transformation=relu]
h2(X) :- $w2={2, 5} h1(Y), edge(X, Y). [combination=elproduct, aggregation=sum]
out :- h2(X).
"""
    layer = RuleLayer(text, seed=1).double()
    rng = np.random.default_rng(3)
    norm, pairs, coef = random_graph(rng, 10)
    x = rng.normal(size=(10, 3))
    w1 = torch.tensor(layer.weights["w1"].detach().numpy(), requires_grad=True)
    w2 = torch.tensor(layer.weights["w2"].detach().numpy(), requires_grad=True)
    a = torch.tensor(norm)
    ref = (a @ torch.relu(a @ torch.tensor(x) @ w1.T) @ w2.T).mean(0)
    out = layer({"feat": (torch.tensor(x), np.arange(10)[:, None]),
                 "edge": (torch.tensor(coef), pairs)})
    torch.testing.assert_close(out[0], ref, rtol=1e-12, atol=1e-12)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(layer.weights["w1"].grad, w1.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.weights["w2"].grad, w2.grad, rtol=1e-10, atol=1e-12)


# --- builder ----------------------------------------------------------------------------------
def test_builder_matches_text():
    X, Y = V.X, V.Y
    t = Template()
    t += (R.h(X) <= (R.feat(Y)["w": [[1.0, 2.0]]], R.hidden.edge(X, Y), ~R.bad(X))) | [
        Transformation.SIGMOID, Aggregation.SUM, Combination.SUM]
    t += R.h / 1 | [Transformation.TANH]
    t += R.out[0.5] <= (R.h(X), R.feat(X)["w"], R.special.alldiff(X, Y), R.feat(Y))
    t += R.h2(X) <= R.feat(X)[[3.0, 4.0]].fixed()
    text = """\
h(X) :- $w=[[1.0, 2.0]] feat(Y), *edge(X, Y), !bad(X). [transformation=sigmoid, aggregation=sum]
h/1 [transformation=tanh]
0.5 out :- h(X), $w feat(X), @alldiff(X, Y), feat(Y).
h2(X) :- <[3.0, 4.0]> feat(X).
"""
    a = t.build(dims={"feat": 2}, queries=["out"])
    b = parse_rules(text, dims={"feat": 2}, queries=["out"])
    assert (a.predicates, a.rules, a.queries) == (b.predicates, b.rules, b.queries)
    assert set(a.weights) == set(b.weights) and len(a.fixed) == len(b.fixed) == 1
    np.testing.assert_array_equal(a.weights["w"], [[1.0, 2.0]])
    assert "h/1 [transformation=tanh]" in str(t)


# --- PyNeuraLogic (optional, evaluated in a child Python): the same numbers to 1e-9 -----------
def test_same_numbers_as_pyneuralogic():
    rng = np.random.default_rng(5)
    w1 = rng.normal(size=(3, 2)).round(3)
    w2 = rng.normal(size=(1, 3)).round(3)
    feats = rng.normal(size=(6, 2)).round(3)
    edges = sorted({(int(a), int(b)) for a, b in rng.integers(0, 6, (14, 2))})
    coef = rng.random(len(edges)).round(3)
    expected = pyneuralogic.call(pyneuralogic.layer_cases, w1.tolist(), w2.tolist(),
                                 feats.tolist(), edges, coef.tolist())
    texts = [  # the same three templates in the text language, in layer_cases' order
        (f"h(X) :- {w1.tolist()} feat(Y), edge(X, Y). [combination=elproduct, aggregation=sum]\n"
         f"h/1 [transformation=sigmoid]\n{w2.tolist()} out :- h(X).\n?- out.", True),
        (f"h(X) :- {w1.tolist()} feat(Y), *edge(X, Y). [aggregation=max, transformation=tanh]\n"
         "out :- h(X).\n?- out.", False),
        ("h(X) :- feat(X), !edge(X, X), feat(Y), @alldiff(X, Y). [aggregation=min]\n"
         "out :- h(X).\n?- out.", False),
    ]
    assert len(expected) == len(texts)
    for (text, edge_values), theirs in zip(texts, expected):
        layer = RuleLayer(text, dims={"feat": 2}, dtype=np.float64)
        mine = layer({"feat": (torch.tensor(feats), np.arange(6)[:, None]),
                      "edge": (torch.tensor(coef[:, None]) if edge_values else None,
                               np.array(edges))})
        np.testing.assert_allclose(mine.detach().numpy()[0], theirs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("text", [
    GCN,
    "h(X) :- {2, 3} feat(Y), edge(X, Y), edge(Y, X). [combination=elproduct, aggregation=avg]\n"
    "?- h(0).",
    "{4, 3} h(X) :- feat(Y), *edge(X, Y). [aggregation=sum]\n?- h(1).",
    "h(X) :- [2.0, -1.0, 0.5] feat(Y), 0.5 edge(X, Y). [combination=elproduct]\n?- h(2).",
])
def test_sparse_fast_path_equals_gather_path(text):
    """Linear rules run as one sparse product (forward and backward); the general gather /
    scatter path must give the same values and gradients, edge values included."""
    rng = np.random.default_rng(7)
    graphs = [random_graph(rng, n, 0.5) for n in (30, 40, 25)]
    feats = np.concatenate([rng.normal(size=(len(g[0]), 3)) for g in graphs])
    results = []
    for fast in (True, False):
        layer = RuleLayer(text, seed=2, dtype=np.float64)
        layer.fast, layer.fast_min = fast, 0
        assert layer._fast[0] is not None  # the rule qualifies for the sparse product
        fv = torch.tensor(feats, requires_grad=True)
        ev = torch.tensor(np.concatenate([g[2] for g in graphs]), requires_grad=True)
        inputs = {"feat": (fv, np.concatenate([np.arange(len(g[0])) for g in graphs])[:, None],
                           np.concatenate([np.full(len(g[0]), s) for s, g in enumerate(graphs)])),
                  "edge": (ev, np.concatenate([g[1] for g in graphs]),
                           np.concatenate([np.full(len(g[1]), s) for s, g in enumerate(graphs)]))}
        values, _, _ = layer.atoms(inputs, predicate="h")
        (values * torch.linspace(-1, 1, values.numel(), dtype=torch.float64)
         .reshape(values.shape)).sum().backward()
        grads = [p.grad.clone() for p in layer.parameters()]
        results.append((values.detach(), fv.grad, ev.grad, grads))
    (v1, f1, e1, g1), (v2, f2, e2, g2) = results
    torch.testing.assert_close(v1, v2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f1, f2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(e1, e2, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# --- PyNeuraLogic's language: templates as PyNeuraLogic writes and prints them ----------------
GCNCONV_PRINTED = """\
<1.0> h__edge(I, I).
h__edge(I, J) :- edge(I, J).
h__edge_count(I, J) :- h__edge(X, J). [aggregation=sum]
h__edge_count(I, J) :- h__edge(X, I). [aggregation=sum]
h__edge_count/2 [transformation=inverse, combination=product]
{2, 3} h(I) :- feat(J), h__edge(J, I), sqrt(h__edge_count(J, I)). [combination=product, aggregation=sum]
h/1 [transformation=identity]
"""


def test_pyneuralogic_printed_gcnconv_template_is_a_gcn():
    # what PyNeuraLogic 0.9.2 prints for GCNConv(3, 2, "h", "feat", "edge"): template facts with
    # variables, an atom combination, a function on a literal, a product combination
    rng = np.random.default_rng(2)
    n = 5
    edges = [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2), (3, 4), (4, 3)]
    x = rng.normal(size=(n, 3))
    layer = RuleLayer(GCNCONV_PRINTED, queries=[f"h({i})" for i in range(n)], dims={"feat": 3},
                      dtype=np.float64)
    out = layer({"feat": (torch.tensor(x), np.arange(n)[:, None]),
                 "edge": (None, np.array(edges))}).detach().numpy()[0].reshape(n, 2)
    a = np.eye(n)
    for i, j in edges:
        a[i, j] = 1.0
    deg = a.sum(0)  # in-degrees with the self loop
    norm = a / np.sqrt(np.outer(deg, deg))
    w = layer.weight(layer.ruleset.rules[-1].weight).detach().numpy()
    np.testing.assert_allclose(out, norm.T @ x @ w.T, rtol=1e-10)


def test_weight_after_rule_without_metadata_and_function_on_literal():
    rs = parse_rules("a :- b.\n[2.0, 3.0] c :- b.\nh :- sigmoid(b). [duplicate_grounding=true]\n"
                     "?- a, c, h.", dims={"b": 1})
    assert [r.head for r in rs.rules] == ["a", "c", "h"]
    assert rs.rules[2].body[0].function == "sigmoid" and not rs.rules[2].merge_duplicates
    out = RuleLayer(rs).double()({"b": torch.tensor([[0.5]], dtype=torch.float64)})
    np.testing.assert_allclose(out.detach().numpy()[0], [0.5, 1.0, 1.5, 1 / (1 + math.exp(-0.5))])


def test_template_facts_in_text_and_builder():
    from polyir.nn.rule_builder import F
    layer = RuleLayer("0.5 e(1, 2).\n<3.0> e(2, 3).\nh(X) :- e(X, Y), f(Y).\n?- h(1), h(2).",
                      dtype=np.float64)
    out = layer({"f": (torch.tensor([[10.0], [20.0]], dtype=torch.float64), [[2], [3]])})
    np.testing.assert_allclose(out.detach().numpy()[0], [10.5, 23.0])
    assert [n for n, _ in layer.named_parameters()] == ["weights.w0"]  # 0.5 learns, <3.0> not
    t = Template([R.e(1, 2)[0.5], (R.h(V.X) <= (F.sqrt(R.e(V.X, V.Y)), R.f(V.Y)))])
    layer = RuleLayer(t, queries=[R.h(1)], dtype=np.float64)
    out = layer({"f": (torch.tensor([[4.0]], dtype=torch.float64), [[2]])})
    assert out.item() == pytest.approx(math.sqrt(0.5) + 4.0, rel=1e-12)


def test_builder_vector_dims_and_f_namespace():
    from polyir.nn.rule_builder import F
    rs = Template([R.h[2, 3] <= R.a[3,]]).build()
    w_body = rs.weights[rs.rules[0].body[0].weight]
    assert w_body.shape == (3,) and np.abs(w_body).max() > 0 and len(np.unique(w_body)) == 3
    rs = Template([(R.h <= (R.a, R.b)) | [F.product, F.sum_agg, F.sigmoid]]).build()
    r = rs.rules[0]
    assert (r.combination, r.aggregation, r.transformation) == ("product", "sum", "sigmoid")
    assert RuleLayer(Template([R.h(V.X) <= R.a(V.X)]), queries=[R.h(1), "h(2)"]) \
        .ruleset.queries[0].terms == ("1",)


def test_predicate_combination_product_and_max():
    text = "h :- a.\nh :- b.\nh/0 [combination={c}]\n?- h."
    x = {"a": torch.tensor([[2.0]]), "b": torch.tensor([[5.0]])}
    assert run(text.format(c="product"), x)[0, 0] == 10.0
    assert run(text.format(c="max"), x)[0, 0] == 5.0
    assert run(text.format(c="avg"), x)[0, 0] == 3.5


# --- data: samples of facts with named constants, per-sample queries, datasets ---------------
def test_samples_with_string_constants_and_per_sample_queries():
    from polyir.nn.rule_data import Dataset, Sample
    layer = RuleLayer("h(X) :- feat(Y), *edge(X, Y). [aggregation=sum]\n?- h(alice).",
                      dims={"feat": 2}, dtype=np.float64)
    s1 = Sample(R.h("alice")[[1.0, 0.0]],
                [R.feat("alice")[[0.5, 1.0]], R.feat("bob")[[2.0, 0.0]],
                 R.edge("alice", "bob"), R.edge("bob", "alice")])
    s2 = Sample([R.h(1)[[0.0, 1.0]], R.h(7)[[0.0, 0.0]]],
                [R.feat(1)[[1.0, 1.0]], R.feat(2)[[3.0, 4.0]], R.edge(1, 2), R.edge(1, 1)])
    ds = Dataset([s1, s2])
    # h(alice) = feat(bob); h(1) = feat(2) + feat(1); h(7) is underivable: 0
    np.testing.assert_array_equal(layer(ds).detach().numpy(), [[2, 0], [4, 5], [0, 0]])
    np.testing.assert_array_equal(ds.targets().numpy(), [[1, 0], [0, 1], [0, 0]])
    # without per-sample queries the rule set's own (h(alice)) apply, one row per sample
    np.testing.assert_array_equal(layer(Dataset([Sample(None, s1.facts)])).detach().numpy(),
                                  [[2, 0]])
    # a tensor-valued fact keeps its gradient (torch layers feeding the rules)
    v = torch.tensor([2.0, 0.5], dtype=torch.float64, requires_grad=True)
    out = layer(Sample(R.h("a"), [R.feat("b")[v], R.edge("a", "b")]))
    out.sum().backward()
    assert v.grad.tolist() == [1.0, 1.0]
    with pytest.raises(GraphError, match="not an input predicate"):
        layer(Sample(R.h(1), [R.foo(1)]))


def test_functions_same_as_pyneuralogic():
    x, a, b = [-1.5, 0.25, 2.0], [1.0, 5.0], [3.0, 2.0]
    f = [[3.0, -5.0], [1.0, 1.0], [0.0, 4.0]]
    expected = pyneuralogic.call(pyneuralogic.function_cases, x, a, b, f)
    xs = {"x": torch.tensor([x], dtype=torch.float64)}
    ab = {"a": torch.tensor([a], dtype=torch.float64), "b": torch.tensor([b], dtype=torch.float64)}
    cases = [(f"h :- x. [transformation={name}]\n?- h.", xs, {"x": 3})
             for name in ("reverse", "signum", "lukasiewicz", "inverse", "leakyrelu")]
    cases += [(f"h :- a, b. [combination={name}]\n?- h.", ab, {"a": 2, "b": 2})
              for name in ("max", "min", "elproduct")]
    cases.append(("h :- f(Y). [aggregation=count]\n?- h.",
                  {"f": (torch.tensor(f, dtype=torch.float64), np.arange(3)[:, None])}, {"f": 2}))
    assert len(expected) == len(cases)
    for (text, inputs, dims), theirs in zip(cases, expected):
        mine = RuleLayer(text, dims=dims, dtype=np.float64)(inputs).detach().numpy()[0]
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-12, err_msg=text)


def test_input_predicate_without_facts_is_an_empty_relation():
    out = run("h(X) :- f(X), !g(X).\n?- h(1).", {"f": rel([[2.0]], [[1]])})
    assert out[0, 0] == 2.0  # no g facts given: g is empty, so !g(1) holds


def test_template_facts_functions_and_atom_combinations_survive_the_file(tmp_path):
    from golden.cases.rules import relational_graph
    rs = parse_rules(GCNCONV_PRINTED + "?- h(0).", dims={"feat": 3})
    g = relational_graph(rs, {"feat": (3, 1), "edge": (1, 2)}, 2)
    polyir.save(g, tmp_path / "gcn.h5")
    back = polyir.load(tmp_path / "gcn.h5").nodes["rules"]
    assert back == rs
    assert back.facts[0].predicate == "h__edge" and back.facts[0].weight in back.fixed
    assert back.rules[-1].body[2].function == "sqrt"
    assert back.predicate("h__edge_count").combination == "product"


def test_examples_rules_xor_and_rules_graphs_run():
    import importlib.util
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "examples"

    def load(name):
        spec = importlib.util.spec_from_file_location(name, root / name)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    load("rules_xor.py").main()  # asserts the re-imported model's outputs equal the original's
    load("rules_graphs.py").main(samples=40, epochs=3)  # asserts the training loss fell


def test_gcnconv_template_same_as_pyneuralogic():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 3)).round(3)
    edges = [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2), (3, 4), (4, 3)]
    expected, w = pyneuralogic.call(pyneuralogic.gcnconv, x.tolist(), edges)
    layer = RuleLayer(GCNCONV_PRINTED, queries=[f"h({i})" for i in range(5)],
                      dims={"feat": 3}, dtype=np.float64)
    with torch.no_grad():
        layer.weights[layer.ruleset.rules[-1].weight].copy_(torch.tensor(w))
    mine = layer({"feat": (torch.tensor(x), np.arange(5)[:, None]),
                  "edge": (None, np.array(edges))}).detach().numpy()[0].reshape(5, 2)
    np.testing.assert_allclose(mine, expected, rtol=1e-9, atol=1e-12)


def test_softmax_aggregation_normalises_over_agg_terms():
    text = ("att(I, J) :- score(I, J). [aggregation=softmax(agg_terms=[J])]\n"
            "?- att(0, 1), att(0, 2), att(0, 3), att(1, 2).")
    scores = [1.0, 2.0, 3.0, 5.0]
    inputs = {"score": rel([[s] for s in scores], [[0, 1], [0, 2], [0, 3], [1, 2]])}
    e = np.exp([1.0, 2.0, 3.0])
    # over J for each I: att(0, j) = softmax(1, 2, 3); att(1, 2) is alone in its group: 1
    np.testing.assert_allclose(run(text, inputs)[0], [*(e / e.sum()), 1.0], rtol=1e-12)
    from polyir.nn.rule_builder import F
    rs = Template([(R.att(V.I, V.J) <= R.score(V.I, V.J))
                   | [Aggregation.SOFTMAX(agg_terms=["J"])]]).build(queries=["att(0, 1)"])
    assert rs.rules[0].agg_terms == ("J",) and F.softmax_agg == "softmax"
    with pytest.raises(polyir.FormatError, match="needs agg_terms"):
        parse_rules("att(I, J) :- score(I, J). [aggregation=softmax]")
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2)]
    try:
        expected = pyneuralogic.call(pyneuralogic.softmax_attention, pairs, scores, pairs[:3])
    except pytest.skip.Exception:
        return  # without PyNeuraLogic the checks above still ran
    np.testing.assert_allclose(run(text, inputs)[0, :3], expected, rtol=1e-9)


def test_pyneuralogic_runs_outside_the_test_process(tmp_path):
    """A JVM in this process would cap the main thread's stack at about 1 MB: h5py's lzf filter
    (a 512 KiB table on the stack) then killed the whole suite with SIGSEGV. After a comparison
    that runs PyNeuraLogic's JVM, this process has none and still writes lzf data."""
    import h5py
    att = pyneuralogic.call(pyneuralogic.softmax_attention, [(0, 1), (0, 2)], [0.0, math.log(3)],
                            [(0, 1), (0, 2)])
    np.testing.assert_allclose(att, [0.25, 0.75], rtol=1e-9)  # softmax of (0, log 3)
    assert not pyneuralogic.jvm_started()
    values = np.arange(4096, dtype=np.float64)
    with h5py.File(tmp_path / "lzf.h5", "w") as f:
        f.create_dataset("values", data=values, compression="lzf")
    with h5py.File(tmp_path / "lzf.h5", "r") as f:
        np.testing.assert_array_equal(f["values"][()], values)
