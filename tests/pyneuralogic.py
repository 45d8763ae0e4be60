"""PyNeuraLogic, the peer library of the rules tests, evaluated in a child Python.

PyNeuraLogic runs on a JVM that JPype starts inside the calling process. A JVM there takes the
process's main thread as one of its own: it puts a guard page about 1 MB below the top of the
main thread's stack, so from then on any C code that needs more stack on that thread dies of
SIGSEGV (h5py's lzf filter keeps a 512 KiB table on the stack), and the JVM's signal handler,
left without stack to run on, prints no Python traceback. The test process therefore never
starts a JVM: `call(fn, ...)` runs a function of this module in one child interpreter (spawned on
first use, kept for the session) and returns what it returns (numpy arrays, lists, strings).
The functions below build the PyNeuraLogic side of each comparison from plain numbers.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

_POOL: ProcessPoolExecutor | None = None
#: seconds one comparison may take in the child (the first call also starts the JVM)
CALL_TIMEOUT = 300


def call(fn, *args):
    """`fn(*args)` evaluated in the PyNeuraLogic child; skips the calling test when
    PyNeuraLogic is not installed there, or POLYIR_SKIP_NEURALOGIC=1 asks to skip it."""
    global _POOL
    if os.environ.get("POLYIR_SKIP_NEURALOGIC") == "1":
        pytest.skip("asked to skip (POLYIR_SKIP_NEURALOGIC=1)")
    if _POOL is None:
        _POOL = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    usable, value = _POOL.submit(_in_child, fn, args).result(timeout=CALL_TIMEOUT)
    if not usable:
        pytest.skip(value)
    return value


def _in_child(fn, args):
    try:
        import logging

        import neuralogic.core  # noqa: F401
        logging.getLogger("neuralogic").setLevel(logging.ERROR)
    except Exception as exc:  # not installed, or no Java
        return False, f"PyNeuraLogic unusable: {type(exc).__name__}: {exc}"
    return True, fn(*args)


def jvm_started() -> bool:
    """Whether this process runs a JVM (the child does; the test process must not)."""
    import sys
    jpype = sys.modules.get("jpype")
    return jpype is not None and jpype.isJVMStarted()


# --- evaluated in the child -------------------------------------------------------------------
def _evaluate(rules, example, query):
    from neuralogic.core import Model, Settings
    from neuralogic.dataset import Dataset
    m = Model()
    m.add_rules(rules)
    m.build(Settings(chain_pruning=False, iso_value_compression=False))
    ds = Dataset()
    ds.add(query, example)
    return np.atleast_1d(np.asarray(m(m.build_dataset(ds))[0], dtype=np.float64)).reshape(-1)


def layer_cases(w1, w2, feats, edges, coef):
    """`out` of three templates (GCN-style with sigmoid atoms and a head weight; hidden edges
    with max aggregation and tanh; negation and alldiff with min) on one example: feature facts
    `feat(i)` = feats[i], edge facts `edge(a, b)`, valued by coef in the first template."""
    from neuralogic.core import Aggregation as A, Combination as C, R, Transformation as T, V
    X, Y = V.X, V.Y
    templates = [
        ([(R.h(X) <= (R.feat(Y)[w1], R.edge(X, Y))) | [C.ELPRODUCT, A.SUM],
          R.h / 1 | [T.SIGMOID], R.out[w2] <= R.h(X)], True),
        ([(R.h(X) <= (R.feat(Y)[w1], R.hidden.edge(X, Y))) | [A.MAX, T.TANH],
          R.out <= R.h(X)], False),
        ([(R.h(X) <= (R.feat(X), ~R.edge(X, X), R.feat(Y), R.special.alldiff(X, Y))) | [A.MIN],
          R.out <= R.h(X)], False),
    ]
    out = []
    for rules, edge_values in templates:
        example = [R.feat(i)[f] for i, f in enumerate(feats)]
        example += [R.edge(a, b)[float(c)] if edge_values else R.edge(a, b)
                    for (a, b), c in zip(edges, coef)]
        out.append(_evaluate(rules, example, R.out))
    return out


def function_cases(x, a, b, f):
    """`h` for one-rule templates: transformations reverse, signum, lukasiewicz, inverse,
    leakyrelu of fact x; combinations max, min, elproduct of facts a and b; count aggregation
    over facts f(i)."""
    from neuralogic.core import Aggregation as A, Combination as C, R, Transformation as T, V
    out = [_evaluate([(R.h <= R.x) | [t]], [R.x[x]], R.h)
           for t in (T.REVERSE, T.SIGNUM, T.LUKASIEWICZ, T.INVERSE, T.LEAKY_RELU)]
    out += [_evaluate([(R.h <= (R.a, R.b)) | [c]], [R.a[a], R.b[b]], R.h)
            for c in (C.MAX, C.MIN, C.ELPRODUCT)]
    out.append(_evaluate([(R.h <= R.f(V.Y)) | [A.COUNT]], [R.f(i)[v] for i, v in enumerate(f)],
                         R.h))
    return out


def gcnconv(x, edges):
    """PyNeuraLogic's GCNConv(3, 2, "h", "feat", "edge") on features x and edges: the outputs
    h(0..n-1) and the weight it drew."""
    from neuralogic.core import Model, R, Settings
    from neuralogic.dataset import Dataset
    from neuralogic.nn.module import GCNConv
    m = Model()
    m.add_rules(GCNConv(3, 2, "h", "feat", "edge")())
    m.build(Settings(chain_pruning=False, iso_value_compression=False))
    example = [R.feat(i)[row] for i, row in enumerate(x)] + [R.edge(a, b) for a, b in edges]
    ds = Dataset()
    for i in range(len(x)):
        ds.add(R.h(i), example)
    out = np.asarray(m(m.build_dataset(ds)), dtype=np.float64)
    return out, np.asarray(next(iter(m.parameters()["weights"].values())), dtype=np.float64)


def softmax_attention(pairs, scores, queries):
    """att(i, j) for `queries` under `att(I, J) :- score(I, J)` with softmax aggregation over J."""
    from neuralogic.core import Aggregation as A, R, V
    rules = [(R.att(V.I, V.J) <= R.score(V.I, V.J)) | [A.SOFTMAX(agg_terms=["J"])]]
    example = [R.score(i, j)[s] for (i, j), s in zip(pairs, scores)]
    return [float(_evaluate(rules, example, R.att(i, j))[0]) for i, j in queries]


def printed_rules():
    """How PyNeuraLogic prints a few rules (weights, hidden and negated literals, alldiff,
    combination and aggregation, a predicate's transformation), one per line."""
    from neuralogic.core import Aggregation as A, Combination as C, R, Transformation as T, V
    rules = [R.xor[1, 8] <= R.xy,
             (R.h(V.X) <= (R.feat(V.Y)[3, 2], R.hidden.edge(V.X, V.Y))) | [T.SIGMOID, A.AVG],
             (R.g(V.X) <= (R.feat(V.X)[[1.0, 2.0], [3.0, 4.0]], ~R.bad(V.X),
                           R.special.alldiff(V.X, V.Y), R.feat(V.Y))) | [C.ELPRODUCT, A.MAX],
             R.xor / 0 | [T.LEAKY_RELU]]
    return "\n".join(str(r) for r in rules)
