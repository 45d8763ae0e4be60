"""The RuleSet text form: PyNeuraLogic's printed syntax parses, printing round-trips, errors name
line and column."""
import numpy as np
import pytest

import pyneuralogic
from polyir import FormatError, GraphError, ir
from polyir.ir.rules_text import describe, format_ruleset, parse_program, parse_rules

# strings exactly as PyNeuraLogic 0.9 prints them (str() of rules and predicate metadata)
PRINTED = """\
{1, 8} xor :- xy.
xor/0 [transformation=identity]
h(X) :- {3, 2} feat(Y), *edge(X, Y). [transformation=sigmoid, aggregation=avg]
$w=[[2.0]] a :- x.
$w=[[2.0]] b :- y.
out :- a, b, [[1.0, -1.0, 0.5]] h(Z). [combination=sum, aggregation=max]
"""


def test_printed_pyneuralogic_template_parses():
    rs = parse_rules(PRINTED, seed=3)
    preds = {p.name: p for p in rs.predicates}
    # dims inferred from the weights: {1, 8} maps xy (8) to xor (1); {3, 2} feat (2) to h (3)
    assert (preds["xy"].dim, preds["xor"].dim) == (8, 1)
    assert (preds["feat"].dim, preds["h"].dim, preds["edge"].dim) == (2, 3, 1)
    assert preds["xy"].input and preds["feat"].input and preds["edge"].input
    assert not preds["h"].input and not preds["xor"].input
    h = rs.rules[1]
    assert h.transformation == "sigmoid" and h.aggregation == "avg"
    assert [lit.hidden for lit in h.body] == [False, True]
    assert rs.weights[h.body[0].weight].shape == (3, 2)
    # the shared weight $w is one entry, used by two rules
    assert rs.rules[2].weight == rs.rules[3].weight == "w"
    np.testing.assert_array_equal(rs.weights["w"], [[2.0]])
    assert rs.rules[4].aggregation == "max"
    # queries default to derived arity-0 predicates no body uses
    assert [q.predicate for q in rs.queries] == ["xor", "out"]


def test_glorot_init_is_seeded_and_bounded():
    a = parse_rules("{30, 20} h :- x.", seed=1)
    b = parse_rules("{30, 20} h :- x.", seed=1)
    c = parse_rules("{30, 20} h :- x.", seed=2)
    w = a.weights["w0"]
    assert np.array_equal(w, b.weights["w0"]) and not np.array_equal(w, c.weights["w0"])
    bound = np.sqrt(6 / 50)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert w.dtype == np.float32


def test_print_parse_round_trip_exact():
    rng = np.random.default_rng(0)
    rs = ir.RuleSet(
        predicates=[ir.Predicate("feat", 1, 3, input=True), ir.Predicate("edge", 2, 1, input=True),
                    ir.Predicate("g", 1, 1, input=True),
                    ir.Predicate("h", 1, 4, transformation="leaky_relu"),
                    ir.Predicate("out", 0, 2), ir.Predicate("lonely", 0, 5, input=True)],
        rules=[ir.Rule("h", ("X",), (ir.Literal("feat", ("Y",), weight="a"),
                                     ir.Literal("edge", ("X", "Y")),
                                     ir.Literal("g", ("Y",), negated=True),
                                     ir.Literal("@alldiff", ("X", "Y"))),
                       transformation="tanh", combination="elproduct", aggregation="max"),
               ir.Rule("h", ("X",), (ir.Literal("feat", ("X",), weight="a"),), aggregation="sum",
                       merge_duplicates=False),
               ir.Rule("out", (), (ir.Literal("h", ("X",)), ir.Literal("edge", ("X", "3"),
                                                                        hidden=True)),
                       weight="b", aggregation="min")],
        weights={"a": rng.normal(size=(4, 3)).astype(np.float32),
                 "b": rng.normal(size=(2, 4)).astype(np.float32)},
        queries=[ir.Query("out"), ir.Query("h", ("7",))], fixed=("b",))
    text = format_ruleset(rs)
    back = parse_rules(text)
    assert back == rs, text
    # float64 weights print with enough digits to come back bit for bit (read as float64)
    rs64 = rs.replace(weights={k: v.astype(np.float64) / 3 for k, v in rs.weights.items()})
    back64 = parse_rules(format_ruleset(rs64), dtype=np.float64)
    assert back64 == rs64


def test_printed_forms():
    rs = parse_rules("<$w=[[1.5, -2.0]]> h :- x. [aggregation=sum]\nk :- !y, $w x.\n"
                     "h/0 [transformation=leakyrelu]", dims={"x": 2, "y": 1})
    text = format_ruleset(rs)
    assert "<$w=[[1.5, -2.0]]> h :- x. [aggregation=sum]" in text
    assert "k :- !y, <$w> x." in text  # a shared weight's later uses print just its name
    assert "h/0 [transformation=leakyrelu]" in text
    # PyNeuraLogic's spelling is read back into the IR's names
    assert rs.predicate("h").transformation == "leaky_relu"
    assert "w" in rs.fixed
    # describe(): large weights as {dims}
    big = parse_rules("{20, 10} h :- x.")
    assert describe(big).startswith("$w0={20, 10} h :- x.")
    assert describe(ir.Affine(np.eye(2, dtype=np.float32), np.zeros(2, np.float32))) is None


@pytest.mark.parametrize("text, line, col, words", [
    ("h :- a.\nh(X) :- a(X", 2, 12, "expected ')'"),
    ("h :- a.\n  k :- {3, 2 f.", 2, 14, "'}'"),
    ("h(X) :- f(X)", 1, 13, "expected '.'"),
    ("H :- a.", 1, 1, "lower-case"),
    ("h :- a.\nh :- b(1).\nh :- b(1, 2).", 3, 6, "arity"),
    ("h :- {0, 2} a.", 1, 6, "positive integers"),
    ("h :- @foo(X), a(X).", 1, 7, "@foo"),
    ("h :- a. [bogus=1]", 1, 1, "bogus"),
    ("h :- a. [aggregation=median]", 1, 22, "median"),
    ("h :- a. [aggregation=concat]", 1, 22, "no fixed dimension"),
    ("h :- foo(a(X)).", 1, 6, "not a function"),
    ("h :- !{2} a.", 1, 6, "negated"),
    ("h :- a ^ b.", 1, 8, "unexpected character"),
    ("?- h(X).", 1, 4, "ground"),
])
def test_parse_errors_name_line_and_column(text, line, col, words):
    with pytest.raises(FormatError) as info:
        parse_rules(text)
    msg = str(info.value)
    assert f"line {line}, column {col}" in msg, msg
    assert words in msg, msg


def test_inconsistent_dims_are_a_clear_error():
    with pytest.raises(FormatError, match="dimension"):
        parse_rules("{2, 3} h :- x.\nk :- {4, 5} x.")
    with pytest.raises(FormatError, match=r"line 2, column 6.*\$w is defined twice"):
        parse_rules("$w={2, 3} h :- x.\nk :- $w={4, 5} x.")
    with pytest.raises(FormatError, match="never given a value"):
        parse_rules("$v h :- x.")


def test_program_keeps_weight_specs():
    prog = parse_program("$w={3, 2} h :- x.\nk :- $w x, <0.5> y.")
    assert prog.weights["w"].dims == (3, 2) and prog.weights["w"].value is None
    fixed = [w for w in prog.weights.values() if w.fixed]
    assert len(fixed) == 1 and float(fixed[0].value) == 0.5


def test_pyneuralogic_str_parses_when_installed():
    text = pyneuralogic.call(pyneuralogic.printed_rules)
    assert "{[1.0, 2.0], [3.0, 4.0]} feat(X), !*bad(X)" in text  # how 0.9.2 prints them
    rs = parse_rules(text)
    g = rs.rules[2]
    assert [lit.negated for lit in g.body] == [False, True, False, False]
    assert g.body[1].hidden  # PyNeuraLogic makes a negated predicate hidden
    assert g.body[2].predicate == "@alldiff" and g.combination == "elproduct"
    np.testing.assert_array_equal(rs.weights[g.body[0].weight], [[1, 2], [3, 4]])
    assert rs.predicate("xor").transformation == "leaky_relu"


def test_polyir_info_prints_the_rules(tmp_path, capsys):
    from polyir.cli import main
    from families import family_graphs
    import polyir
    g = family_graphs()["rules"]
    path = tmp_path / "rules.h5"
    polyir.save(g, path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "h(X) :- $w1=[[" in out and "*edge(X, Y). [transformation=tanh]" in out
    assert "h/1 [transformation=sigmoid]" in out and "?- out." in out
    # the printed rules parse back to the node
    assert main(["info", "--json", str(path)]) == 0
    import json
    text = json.loads(capsys.readouterr().out)["rules"]["rules"]
    assert parse_rules(text, dims={"feat": 2}) == g.nodes["rules"]
