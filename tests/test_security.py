"""Hostile input: names, files, caches and values that must never leak, hang, crash or compute
a wrong answer. Expected values come from the numpy reference of tests/test_backend_c.py."""
from __future__ import annotations

import re

import numpy as np
import pytest

import polyir
from families import family_graphs
from polyir import ir
from polyir.backends import c as c_backend
from polyir.backends import cuda as cuda_backend

from test_backend_c import NEURONS, Ref, random_inputs

F32 = np.float32

# names that once broke the generated C: keywords, the ABI's own symbols, C library functions
# whose `<name>_r` twin exists, a node `node` beside a node `weight`, non-ASCII, comment and
# preprocessor tricks, terminal escapes
HOSTILE_NAMES = ["int", "polyir_run", "rand", "strtok", "node", "weight", "lgamma", "drand48",
                 "strerror", "random", "é", "名前", "a*", "*", "x\\", "??=", "\x1b[31mred",
                 "line\nint main(void) { return 1; }", "#define TILE 1", "main", "pctx"]


def _strip_comments(source: str) -> str:
    return re.sub(r"/\*.*?\*/", " ", source, flags=re.S)


def _graph_with_names(names, rng):
    """x -> Affine -> LI (stateful: parameter tables named after `r`) -> tanh -> y, with the
    nodes named from `names` and inserted in an order unlike the evaluation order."""
    x, fc, cell, act, y = names
    g = ir.Graph(metadata={"dt": 1e-3})
    g.add(y, ir.Output((4,)))
    g.add(act, ir.Activation("tanh"))
    g.add(cell, NEURONS["LI"](4, rng))
    g.add(fc, ir.Affine(rng.normal(size=(4, 3)).astype(F32), rng.normal(size=4).astype(F32)))
    g.add(x, ir.Input((3,)))
    for e in ((x, fc), (fc, cell), (cell, act), (act, y)):
        g.connect(*e)
    return g


@pytest.mark.parametrize("start", range(0, len(HOSTILE_NAMES), 5))
def test_hostile_names_compile_and_match_the_reference(start, tmp_path):
    rng = np.random.default_rng(start)
    names = (HOSTILE_NAMES * 2)[start:start + 5]
    g = _graph_with_names(names, rng)
    program = polyir.compile(g, "c", cache_dir=tmp_path)
    seq = (50 * rng.normal(size=(6, 9, 3))).astype(F32)
    np.testing.assert_allclose(program.run(seq), Ref(g).sequence(seq)[0], rtol=1e-4, atol=1e-5)
    # names live only inside comments: the code equals that of the same graph with plain names
    plain = _graph_with_names([f"n{k}" for k in range(5)], np.random.default_rng(start))
    assert _strip_comments(program.source) == _strip_comments(c_backend.codegen(plain))
    assert (_strip_comments(cuda_backend.codegen(g))
            == _strip_comments(cuda_backend.codegen(plain)))
    assert "\x1b" not in program.source and "\nint main" not in program.source


def test_nodes_named_node_and_weight_do_not_collide(tmp_path):
    rng = np.random.default_rng(3)
    g = ir.Graph()
    g.add("x", ir.Input((3,)))
    g.add("node", ir.Affine(rng.normal(size=(5, 3)).astype(F32), np.zeros(5, F32)))
    g.add("weight", ir.Affine(rng.normal(size=(2, 5)).astype(F32), np.ones(2, F32)))
    g.add("y", ir.Output((2,)))
    for e in (("x", "node"), ("node", "weight"), ("weight", "y")):
        g.connect(*e)
    xs = rng.normal(size=(7, 3)).astype(F32)
    got = polyir.compile(g, "c", cache_dir=tmp_path)(xs)
    np.testing.assert_allclose(got, Ref(g)(xs)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["ffnn", "logic", "logic_conv", "leaky_integrators"])
def test_evaluation_order_never_follows_names_or_insertion(family, tmp_path):
    """The same graph with its nodes stored in reverse order (as renaming a node in a file
    does to its position) computes the same on C as the numpy reference."""
    g = family_graphs()[family]
    rev = ir.Graph(metadata=g.metadata)
    for n in reversed(list(g.nodes)):
        rev.add(n, g.nodes[n])
    for e in g.edges:
        rev.connect(*e)
    assert rev.infer_types() == g.infer_types()
    rng = np.random.default_rng(5)
    program = polyir.compile(rev, "c", cache_dir=tmp_path)
    if g.stateful:
        seq = random_inputs(g, 11, rng, steps=7)
        np.testing.assert_allclose(program.run(*seq), Ref(g).sequence(*seq)[0], rtol=1e-4,
                                   atol=1e-5)
    else:
        xs = random_inputs(g, 11, rng)
        np.testing.assert_allclose(program(*xs), Ref(g)(*xs)[0], rtol=1e-5, atol=1e-5)


def test_check_is_linear_in_nodes_stored_out_of_order():
    """8,000 nodes stored in reverse topological order: typing visits each node about once
    (counted, not timed)."""
    n = 8000
    g = ir.Graph()
    names = [f"s{k}" for k in range(n)]
    g.add("y", ir.Output((2,)))
    for k in reversed(range(n)):
        g.add(names[k], ir.Scale(np.ones(2, F32)))
    g.add("x", ir.Input((2,)))
    chain = ["x"] + names + ["y"]
    for a, b in zip(chain, chain[1:]):
        g.connect(a, b)
    calls = 0
    original = ir.Scale.out_port

    def counting(self, inputs):
        nonlocal calls
        calls += 1
        return original(self, inputs)

    ir.Scale.out_port = counting
    try:
        g.check()
    finally:
        ir.Scale.out_port = original
    assert calls <= 3 * n
