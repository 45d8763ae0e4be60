"""The Datalog grounding engine against brute-force enumeration written here."""
import itertools

import numpy as np
import pytest

from polyir import GraphError
from polyir.ir.kinds.rules import is_variable
from polyir.ir.rules_text import parse_rules
from polyir.nn.grounding import Engine, GroundingCache, structure_key


def facts_of(rel: dict, batch: int):
    """{pred: set of tuples} per sample -> engine facts {pred: (sample, args)}."""
    out = {}
    for name, (arity, per_sample) in rel.items():
        rows = [(s,) + t for s in range(batch) for t in sorted(per_sample[s])]
        arr = np.array(rows, np.int64).reshape(-1, 1 + arity)
        out[name] = (arr[:, 0], arr[:, 1:])
    return out


def brute_force(rs, model: dict, rule_index: int, domain):
    """Groundings of one rule by enumerating every assignment of its variables over `domain`:
    {(head tuple, visible body atoms)} (merged) and the list (unmerged)."""
    r = rs.rules[rule_index]
    variables = sorted({t for lit in r.body for t in lit.terms if is_variable(t)})
    found = []
    for values in itertools.product(domain, repeat=len(variables)):
        env = dict(zip(variables, values))
        val = lambda t: env[t] if is_variable(t) else int(t)  # noqa: E731
        ok = True
        for lit in r.body:
            args = tuple(val(t) for t in lit.terms)
            if lit.predicate == "@alldiff":
                ok &= len(set(args)) == len(args)
            elif lit.predicate == "@neq":
                ok &= args[0] != args[1]
            elif lit.predicate == "@lt":
                ok &= args[0] < args[1]
            elif lit.negated:
                ok &= args not in model[lit.predicate]
            else:
                ok &= args in model[lit.predicate]
        if ok:
            head = tuple(val(t) for t in r.head_terms)
            visible = tuple((lit.predicate, tuple(val(t) for t in lit.terms)) for lit in r.body
                            if not (lit.hidden or lit.negated or lit.predicate.startswith("@")))
            found.append((head, visible))
    return set(found), found


RULES = """\
h(X, Z) :- e(X, Y), e(Y, Z), !f(Z), @neq(X, Z).
k(X) :- h(X, X2), *e(X2, X), @lt(X, X2).
c(X) :- e(X, 2), f(X).
d :- *e(X, Y), f(Y), @alldiff(X, Y, 3).
"""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_joins_negation_builtins_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    rs = parse_rules(RULES)
    batch, domain = 3, range(6)
    e = [{tuple(int(v) for v in rng.integers(0, 6, 2)) for _ in range(14)} for _ in range(batch)]
    f = [{(int(v),) for v in rng.choice(6, 3, replace=False)} for _ in range(batch)]
    g = Engine(rs).ground(facts_of({"e": (2, e), "f": (1, f)}, batch), batch)
    for s in range(batch):
        model = {"e": e[s], "f": f[s]}
        for name, i in (("h", 0), ("k", 1), ("c", 2), ("d", 3)):
            merged, _ = brute_force(rs, model, i, domain)
            heads = {h for h, _ in merged}
            model[name] = heads
            atoms = g.atoms[name]
            mine = {tuple(row[1:]) for row in atoms if row[0] == s}
            assert mine == heads, (name, s)
            # merged groundings: one per distinct (head, visible body atoms)
            rg = g.rules[i]
            in_sample = atoms[rg.head][:, 0] == s
            assert int(in_sample.sum()) == len(merged), (name, s)
            lits = [rs.rules[i].body[j] for j in rg.visible]
            mine_g = set()
            for gi in np.nonzero(in_sample)[0]:
                head = tuple(atoms[rg.head[gi]][1:])
                vis = tuple((lit.predicate, tuple(g.atoms[lit.predicate][b[gi]][1:]))
                            for lit, b in zip(lits, rg.body))
                mine_g.add((head, vis))
            assert mine_g == merged


def test_duplicate_groundings_merge_unless_asked():
    rs = parse_rules("h :- f(Y), *e(X, Y).\nk :- f(Y), *e(X, Y). [duplicit_grounding=true]")
    facts = {"f": (np.zeros(2), [[1], [2]]), "e": (np.zeros(3), [[0, 1], [5, 1], [0, 2]])}
    g = Engine(rs).ground(facts, 1)
    assert len(g.rules[0].head) == 2  # f(1) via X=0 and X=5 is one grounding
    assert len(g.rules[1].head) == 3


def test_samples_never_join_across_the_batch():
    rs = parse_rules("h(X) :- e(X, Y), f(Y).\n?- h(0).")
    facts = {"e": ([0, 1], [[0, 1], [0, 2]]), "f": ([1, 0], [[1], [3]])}
    g = Engine(rs).ground(facts, 2)
    assert len(g.atoms["h"]) == 0


def test_semi_naive_transitive_closure_equals_reachability():
    rs = parse_rules("path(X, Y) :- edge(X, Y).\npath(X, Z) :- path(X, Y), edge(Y, Z).\n"
                     "?- path(0, 1).")
    rng = np.random.default_rng(4)
    n, batch = 9, 2
    # acyclic edges (i < j): the ground network is acyclic too
    mats = [np.triu(rng.random((n, n)) < 0.3, 1) for _ in range(batch)]
    rows = [(s, i, j) for s in range(batch) for i, j in zip(*np.nonzero(mats[s]))]
    arr = np.array(rows)
    eng = Engine(rs)
    assert any(rec for _, rec in eng.strata)  # the component {path} is recursive
    g = eng.ground({"edge": (arr[:, 0], arr[:, 1:])}, batch)
    for s in range(batch):
        reach = mats[s].copy()
        for _ in range(n):  # boolean closure by repeated products
            reach = reach | ((reach.astype(int) @ mats[s].astype(int)) > 0)
        expected = {(int(i), int(j)) for i, j in zip(*np.nonzero(reach))}
        got = {(int(a), int(b)) for sm, a, b in g.atoms["path"] if sm == s}
        assert got == expected
    # atoms are stored level by level: path(a, b) sits one level above every path it reads
    bounds = g.levels["path"]
    level = np.searchsorted(bounds, np.arange(len(g.atoms["path"])), "right") - 1
    rec = g.rules[1]
    reads = rec.body[0]  # the visible path(X, Y) of rule 1
    assert (level[rec.head] > level[reads]).all() and len(bounds) > 3


def test_cyclic_ground_network_is_refused_naming_the_cycle():
    rs = parse_rules("path(X, Y) :- edge(X, Y).\npath(X, Z) :- path(X, Y), edge(Y, Z).\n"
                     "?- path(0, 1).")
    edges = np.array([[0, 1], [1, 0]])
    with pytest.raises(GraphError, match=r"cyclic: path\(\d, \d\) <- path"):
        Engine(rs).ground({"edge": (np.zeros(2, int), edges)}, 1)


def test_mutual_recursion_evaluates_by_level():
    from polyir.nn.rules import RuleLayer
    # even/odd distance along a chain 0 -> 1 -> 2 -> 3
    layer = RuleLayer("even(X) :- start(X).\nodd(X) :- even(Y), *e(Y, X).\n"
                      "even(X) :- 2.0 odd(Y), *e(Y, X).\n?- even(2), odd(3), odd(1).",
                      dtype=np.float64)
    out = layer({"start": (None, [[0]]), "e": (None, [[0, 1], [1, 2], [2, 3]])})
    # even(0) = 1; odd(1) = even(0) = 1; even(2) = 2 odd(1) = 2; odd(3) = even(2) = 2
    np.testing.assert_allclose(out.detach().numpy()[0], [2.0, 2.0, 1.0])


def test_unstratified_negation_refused():
    with pytest.raises(GraphError, match="not stratified"):
        Engine(parse_rules("p(X) :- q(X), !r(X).\nr(X) :- q(X), !p(X).\nout :- p(X).\nok :- r(X)."))


def test_constants_need_codes_and_duplicates_are_refused():
    rs = parse_rules("h :- e(X, alice).")
    with pytest.raises(GraphError, match="alice"):
        Engine(rs).ground({"e": ([0], [[1, 2]])}, 1)
    g = Engine(rs, constants={"alice": 2}).ground({"e": ([0], [[1, 2]])}, 1)
    assert len(g.atoms["h"]) == 1 and g.queries[0][0] == 0
    with pytest.raises(GraphError, match="twice"):
        Engine(rs, constants={"alice": 2}).ground({"e": ([0, 0], [[1, 2], [1, 2]])}, 1)


def test_underivable_query_row_is_minus_one():
    rs = parse_rules("h(X) :- e(X).\n?- h(3).")
    g = Engine(rs).ground({"e": ([0, 1], [[3], [4]])}, 2)
    assert list(g.queries[0]) == [0, -1]


def test_cache_keys_on_structure_not_values():
    rs = parse_rules("h(X) :- e(X, Y).\n?- h(0).")
    cache = GroundingCache(Engine(rs), size=2)
    f1 = {"e": (np.zeros(2, int), np.array([[0, 1], [1, 2]]))}
    f2 = {"e": (np.zeros(2, int), np.array([[0, 1], [1, 3]]))}
    a = cache(f1, 1)
    assert cache(f1, 1) is a and (cache.hits, cache.misses) == (1, 1)
    assert cache(f2, 1) is not a and cache.misses == 2
    assert structure_key(f1, 1) != structure_key(f1, 2)
    cache(f1, 2)
    assert len(cache.store) == 2  # least recently used evicted


def test_progress_bar_appears_only_after_the_threshold():
    from polyir.nn.grounding import Progress
    quiet = Progress(3, enabled=True, after=3600.0)
    quiet.step("a")
    assert quiet.bar is None  # a grounding under the threshold shows nothing
    shown = Progress(3, enabled=True, after=0.0)
    shown.step("a")
    shown.step("b")
    assert shown.bar is not None and shown.bar.tasks[0].completed == 2
    shown.close()
    rs = parse_rules("h(X) :- e(X, Y).\n?- h(0).")
    g = Engine(rs).ground({"e": (np.zeros(2, int), np.array([[0, 1], [1, 2]]))}, 1,
                          progress=True)
    assert len(g.atoms["h"]) == 2


def test_next_builtin_filters_and_binds():
    facts = {"f": (np.zeros(3, int), np.array([[1], [2], [5]]))}
    # as a filter: X and Y both bound by f
    g = Engine(parse_rules("h(X) :- f(X), f(Y), @next(X, Y).\n?- h(1).")).ground(facts, 1)
    assert sorted(g.atoms["h"][:, 1].tolist()) == [1]
    # binding: Y = X + 1 where only X is bound
    g = Engine(parse_rules("s(Y) :- f(X), @next(X, Y).\n?- s(2).")).ground(facts, 1)
    assert sorted(g.atoms["s"][:, 1].tolist()) == [2, 3, 6]
