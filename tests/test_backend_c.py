"""The generated-C backend against numpy references written here (and against polyir.to_torch in
eval mode when the torch importer is installed): every kind it claims, seeded random graphs of
each family, awkward batch sizes, bad inputs, the cache under concurrency, compiler errors.

Logic results must be bit-exact; real results within float32 tolerance (stated per case).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import polyir
from families import family_graphs
from polyir import ir
from polyir.backends import CompileError
from polyir.ir.walk import GraphWalker

F32 = np.float32


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory):
    """A private shared-object cache for this module (a fresh machine's state)."""
    old = os.environ.get("POLYIR_CACHE")
    os.environ["POLYIR_CACHE"] = str(tmp_path_factory.mktemp("polyir-cache"))
    yield
    if old is None:
        os.environ.pop("POLYIR_CACHE", None)
    else:
        os.environ["POLYIR_CACHE"] = old


try:
    from polyir.importers.torch import to_torch  # noqa: F401
    HAVE_TORCH_IMPORTER = True
except ImportError:
    HAVE_TORCH_IMPORTER = False

# ---------------------------------------------------------------------------------------------
# numpy reference: one function per kind, written from the kinds' docstrings
# ---------------------------------------------------------------------------------------------

# difflogic's 16 gates, truth table for (a, b) = (0,0), (0,1), (1,0), (1,1)
TRUTH = {
    0: (0, 0, 0, 0), 1: (0, 0, 0, 1), 2: (0, 0, 1, 0), 3: (0, 0, 1, 1),
    4: (0, 1, 0, 0), 5: (0, 1, 0, 1), 6: (0, 1, 1, 0), 7: (0, 1, 1, 1),
    8: (1, 0, 0, 0), 9: (1, 0, 0, 1), 10: (1, 0, 1, 0), 11: (1, 0, 1, 1),
    12: (1, 1, 0, 0), 13: (1, 1, 0, 1), 14: (1, 1, 1, 0), 15: (1, 1, 1, 1),
}
TRUTH_ARR = np.array([TRUTH[g] for g in range(16)], np.int64)


def gate_ref(g, a, b):
    return TRUTH_ARR[g, 2 * a.astype(np.int64) + b.astype(np.int64)]


def erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def act_ref(fn, alpha, x):
    x = x.astype(np.float64)
    with np.errstate(over="ignore"):
        return {
            "identity": lambda: x,
            "tanh": lambda: np.tanh(x),
            "sigmoid": lambda: 1 / (1 + np.exp(-x)),
            "relu": lambda: np.maximum(x, 0),
            "leaky_relu": lambda: np.where(x > 0, x, alpha * x),
            "elu": lambda: np.where(x > 0, x, alpha * np.expm1(x)),
            "softplus": lambda: np.where(x * alpha > 20, x, np.log1p(np.exp(alpha * x)) / alpha),
            "gelu": lambda: 0.5 * x * (1 + erf(x / np.sqrt(2))),
            "silu": lambda: x / (1 + np.exp(-x)),
            "hardtanh": lambda: np.clip(x, -alpha, alpha),
            "exp": lambda: np.exp(x),
        }[fn]()


def conv_ref(x, w, b, stride, padding, dilation, groups):
    """Direct convolution, x (B, C, *S), w (O, C/g, *K)."""
    nd = w.ndim - 2
    x = x.astype(np.float64)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * nd
        else:
            tot = [d * (k - 1) for k, d in zip(w.shape[2:], dilation)]
            pads = [(t // 2, t - t // 2) for t in tot]
            x = np.pad(x, [(0, 0), (0, 0)] + pads)
            padding = (0,) * nd
    x = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    out_sp = [(x.shape[2 + d] - dilation[d] * (w.shape[2 + d] - 1) - 1) // stride[d] + 1
              for d in range(nd)]
    B, O = x.shape[0], w.shape[0]
    cg = w.shape[1]
    og = O // groups
    y = np.zeros((B, O, *out_sp))
    for o in range(O):
        g = o // og
        for pos in np.ndindex(*out_sp):
            acc = np.zeros(B)
            for tap in np.ndindex(*w.shape[2:]):
                idx = tuple(pos[d] * stride[d] + tap[d] * dilation[d] for d in range(nd))
                xs = x[(slice(None), slice(g * cg, (g + 1) * cg)) + idx]
                acc += xs @ w[(o, slice(None)) + tap].astype(np.float64)
            y[(slice(None), o) + pos] = acc + b[o]
    return y


def windows_ref(x, k, s, p, fill=0.0):
    """(B, C, H, W) -> (B, C, OH, OW, kh*kw) windows over the padded input."""
    xp = np.pad(x, [(0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])], constant_values=fill)
    oh = (xp.shape[2] - k[0]) // s[0] + 1
    ow = (xp.shape[3] - k[1]) // s[1] + 1
    out = np.empty(x.shape[:2] + (oh, ow, k[0] * k[1]), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = xp[:, :, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].reshape(
                x.shape[0], x.shape[1], -1)
    return out


def neuron_ref(kind, node, x, state, dt):
    """Forward Euler, as polyir.nn documents it (float32 arithmetic, same operation order)."""
    p = {f: np.asarray(getattr(node, f), F32) for f in ("tau", "r", "v_leak", "v_threshold",
                                                       "v_reset", "tau_syn", "tau_mem", "w_in")
         if getattr(node, f, None) is not None}
    dt = F32(dt)
    v = state.get("v", np.zeros_like(x))
    i = state.get("i", np.zeros_like(x))
    if kind in ("I", "IF"):
        v = v + (dt * p["r"]) * x
    elif kind in ("LI", "LIF"):
        v = v + (dt / p["tau"]) * ((p["v_leak"] - v) + p["r"] * x)
    else:
        i = i + (dt / p["tau_syn"]) * (p["w_in"] * x - i)
        v = v + (dt / p["tau_mem"]) * ((p["v_leak"] - v) + p["r"] * i)
    if kind in ("IF", "LIF", "CubaLIF"):
        z = (v > p["v_threshold"]).astype(F32)
        v = np.where(z > 0, p["v_reset"], v).astype(F32)
        y = z
    else:
        y = v
    return y.astype(F32), {"v": v.astype(F32), "i": i.astype(F32)}


class Ref(GraphWalker):
    """Evaluates a graph with the numpy references above (float64 for real math)."""

    def __init__(self, graph, dt=None):
        super().__init__(graph)
        self.dt = dt if dt is not None else graph.metadata.get("dt")
        self.state: dict = {}

    def visit(self, name, node, values):
        x = values.get("input")
        k = type(node).__name__
        if k == "Output":
            return x
        if k == "Affine":
            return x @ node.weight.T.astype(np.float64) + node.bias
        if k == "Linear":
            return x @ node.weight.T.astype(np.float64)
        if k == "Scale":
            return x * node.scale
        if k == "Threshold":
            return (x > node.threshold).astype(np.float64)
        if k == "Activation":
            return act_ref(node.fn, node.alpha, x)
        if k == "Flatten":
            s = node.start_dim % (x.ndim - 1) + 1
            e = node.end_dim % (x.ndim - 1) + 1
            return x.reshape(x.shape[:s] + (-1,) + x.shape[e + 1:])
        if k in ("Conv1d", "Conv2d"):
            nd = node.weight.ndim - 2
            tup = (lambda v: tuple(v) if isinstance(v, tuple) else (v,) * nd)
            pad = node.padding if isinstance(node.padding, str) else tup(node.padding)
            return conv_ref(x, node.weight, node.bias, tup(node.stride), pad, tup(node.dilation),
                            node.groups)
        if k in ("SumPool2d", "AvgPool2d"):
            w = windows_ref(x.astype(np.float64), node.kernel_size, node.stride, node.padding)
            return w.sum(-1) if k == "SumPool2d" else w.mean(-1)
        if k == "Binarize":
            xs = x.astype(F32)
            th = node.thresholds.astype(F32)
            S = xs.shape[1:]
            ax = node.axis % len(S)
            T = th.shape[-1]
            if th.ndim == 1 or th.shape[:-1] == S:
                thb = th
            else:
                view = [1] * len(S) + [T]
                view[ax] = S[ax]
                thb = th.reshape(view)
            bits = (xs[..., None] > thb).astype(np.int64)  # (B, *S, T)
            bits = np.moveaxis(bits, -1, ax + 2)  # T right after axis
            return bits.reshape((xs.shape[0],) + S[:ax] + (S[ax] * T,) + S[ax + 1:])
        if k == "LogicLayer":
            return gate_ref(node.gate[None, :], x[:, node.a], x[:, node.b])
        if k == "LogicTree2d":
            B, C, H, W = x.shape
            (kh, kw), (sh, sw), (ph, pw) = node.kernel_size, node.stride, node.padding
            xp = np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)])
            oh, ow = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
            K, L = node.leaves.shape[:2]
            y = np.zeros((B, K, oh, ow), np.int64)
            for kk in range(K):
                for i in range(oh):
                    for j in range(ow):
                        vals = [xp[:, c, i * sh + dy, j * sw + dx] for c, dy, dx in node.leaves[kk]]
                        gi = 0
                        while len(vals) > 1:
                            nxt = []
                            for q in range(0, len(vals), 2):
                                nxt.append(gate_ref(node.gates[kk, gi], vals[q], vals[q + 1]))
                                gi += 1
                            vals = nxt
                        y[:, kk, i, j] = vals[0]
            return y
        if k == "OrPool2d":
            return windows_ref(x, node.kernel_size, node.stride, node.padding).max(-1)
        if k == "GroupSum":
            s = x.reshape(x.shape[0], node.k, x.shape[1] // node.k).sum(-1).astype(F32)
            return ((s + F32(node.beta)) / F32(node.tau)).astype(F32)
        if k in ("I", "IF", "LI", "LIF", "CubaLI", "CubaLIF"):
            y, self.state[name] = neuron_ref(k, node, x.astype(F32), self.state.get(name, {}),
                                             self.dt)
            return y
        raise NotImplementedError(k)

    def __call__(self, *xs):
        env = self.run(dict(zip(self.input_names, xs)))
        return [env[n] for n in self.output_names]

    def sequence(self, *seqs):
        batch = seqs[0].shape[1]  # delayed edges read zeros at the first step
        prev = {e[0]: np.zeros((batch,) + tuple(self.types[e[0]].shape))
                for e in self.recurrent_edges}
        outs = []
        for t in range(seqs[0].shape[0]):
            env = self.run(dict(zip(self.input_names, [s[t] for s in seqs])), previous=prev)
            prev = env
            outs.append([env[n] for n in self.output_names])
        return [np.stack([o[k] for o in outs]) for k in range(len(self.output_names))]


def random_inputs(graph, batch, rng, steps=None):
    xs = []
    g = graph.flattened()
    for name in g.inputs:
        node = g.nodes[name]
        shape = ((steps,) if steps else ()) + (batch,) + tuple(node.shape)
        if node.elem == "bit":
            xs.append(rng.integers(0, 2, shape).astype(F32))
        else:
            xs.append(rng.normal(size=shape).astype(F32))
    return xs


def check(graph, batch=37, rtol=1e-5, atol=1e-5, seed=0, exact=None, **options):
    """Compile, run on random inputs, compare with the reference (and torch eval if present)."""
    rng = np.random.default_rng(seed)
    m = polyir.compile(graph, "c", **options)
    xs = random_inputs(graph, batch, rng)
    got = m(*xs)
    got = list(got) if isinstance(got, tuple) else [got]
    want = Ref(graph, options.get("dt"))(*xs)
    logic = exact if exact is not None else any(
        isinstance(n, (ir.LogicLayer, ir.LogicTree2d, ir.OrPool2d, ir.Binarize))
        for n in graph.nodes.values())
    for g_, w_ in zip(got, want):
        assert g_.shape == w_.shape
        if logic:
            np.testing.assert_array_equal(g_, w_.astype(F32))
        else:
            np.testing.assert_allclose(g_, w_, rtol=rtol, atol=atol)
    if HAVE_TORCH_IMPORTER:
        tm = polyir.compile(graph, "torch", **({"dt": options["dt"]} if "dt" in options else {}))
        tw = tm(*xs)
        tw = list(tw) if isinstance(tw, tuple) else [tw]
        for g_, t_ in zip(got, tw):
            if logic:
                np.testing.assert_array_equal(g_, t_)
            else:
                np.testing.assert_allclose(g_, t_, rtol=rtol, atol=atol)
    return m, xs, got


def chain(*nodes, input_shape=None, elem="real", **meta):
    return ir.Graph.sequential(*nodes, input_shape=input_shape, input_elem=elem, metadata=meta)


# ---------------------------------------------------------------------------------------------
# golden cases per kind
# ---------------------------------------------------------------------------------------------

def test_torch_reference_is_used():
    """The torch importer is part of the package: the comparisons with it must not be skipped."""
    assert HAVE_TORCH_IMPORTER


def test_gate_table_matches_truth_table():
    """program.GATE_EXPR against the truth table above, on words holding all four (a, b) pairs."""
    from polyir.backends.program import GATE_EXPR
    a, b = 0b1100, 0b1010  # bit k: (a, b) = pairs (0,0), (0,1), (1,0), (1,1) at bits 0..3
    for g, expr in enumerate(GATE_EXPR):
        val = eval(expr.replace("ZERO", "0").replace("ONES", "0xF"), {}, {"a": a, "b": b}) & 0xF
        assert tuple((val >> k) & 1 for k in range(4)) == TRUTH[g], (g, expr)


def test_all_16_gates_all_pairs_every_batch_position():
    """Each gate on every (a, b) pair, at sample positions across several words and a partial
    last word (batch 300 with 256-sample words)."""
    gates = np.repeat(np.arange(16), 2)
    a = np.tile([0, 1], 16)
    b = np.tile([1, 0], 16)
    g = chain(ir.LogicLayer(np.r_[a, a], np.r_[b, a], np.r_[gates, gates]), input_shape=(2,),
              elem="bit")
    m = polyir.compile(g, "c")
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 75, F32)
    y = m(x)
    want = np.stack([gate_ref(gg, x[:, aa], x[:, bb]) for gg, aa, bb in
                     zip(np.r_[gates, gates], np.r_[a, a], np.r_[b, a])], 1)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("word_bits", [64, 128, 256, 512])
@pytest.mark.parametrize("logic", ["table", "unrolled"])
def test_random_logic_layer(word_bits, logic):
    rng = np.random.default_rng(word_bits)
    n_in, n = 40, 300
    g = chain(ir.LogicLayer(rng.integers(0, n_in, n), rng.integers(0, n_in, n),
                            rng.integers(0, 16, n)),
              ir.LogicLayer(rng.integers(0, n, 90), rng.integers(0, n, 90), rng.integers(0, 16, 90)),
              input_shape=(n_in,), elem="bit")
    check(g, batch=word_bits + 3, word_bits=word_bits, logic=logic)


@pytest.mark.parametrize("fn", sorted(ir.ACTIVATIONS))
def test_activation(fn):
    alpha = {"leaky_relu": 0.2, "elu": 0.7, "softplus": 2.0, "hardtanh": 0.5}.get(fn)
    g = chain(ir.Activation(fn, alpha), input_shape=(6,))
    check(g, batch=70, rtol=2e-6, atol=2e-6)


def test_softplus_threshold_and_extremes():
    g = chain(ir.Activation("softplus", 1.0), input_shape=(4,))
    m = polyir.compile(g, "c")
    x = np.array([[-100, -1e-3, 19.9, 25.0]], F32)
    np.testing.assert_allclose(m(x), act_ref("softplus", 1.0, x), rtol=1e-6, atol=1e-38)


def test_affine_linear_scale_threshold():
    rng = np.random.default_rng(1)
    g = chain(ir.Affine(rng.normal(size=(7, 5)).astype(F32), rng.normal(size=7).astype(F32)),
              ir.Linear(rng.normal(size=(6, 7)).astype(F32)),
              ir.Scale(rng.normal(size=6).astype(F32)),
              ir.Threshold(rng.normal(size=6).astype(F32) * 0.1))
    # the threshold can flip on rounding exactly at the edge; compare the real part separately
    check(chain(*[n for n in list(g.nodes.values())[1:4]]), batch=300, rtol=1e-5, atol=1e-5)
    check(g, batch=33, exact=True)


@pytest.mark.parametrize("case", ["plain", "stride_pad", "dilation_groups", "same"])
def test_conv2d(case):
    rng = np.random.default_rng(2)
    w = rng.normal(size=(4, 2, 3, 3)).astype(F32)
    kw = {"plain": {}, "stride_pad": dict(stride=(2, 1), padding=(1, 2)),
          "dilation_groups": dict(dilation=(2, 1), groups=2),
          "same": dict(padding="same")}[case]
    if case == "dilation_groups":
        w = rng.normal(size=(4, 1, 3, 3)).astype(F32)
    g = chain(ir.Conv2d(None, w, bias=rng.normal(size=4).astype(F32), **kw), input_shape=(2, 7, 6))
    check(g, batch=20, rtol=1e-5, atol=1e-5)


def test_conv1d():
    rng = np.random.default_rng(3)
    g = chain(ir.Conv1d(None, rng.normal(size=(3, 2, 4)).astype(F32), stride=2, padding=1,
                        bias=rng.normal(size=3).astype(F32)), input_shape=(2, 11))
    check(g, batch=9)


@pytest.mark.parametrize("kind", [ir.SumPool2d, ir.AvgPool2d])
def test_pools(kind):
    g = chain(kind((3, 2), (2, 2), (1, 1)), ir.Flatten(start_dim=0), input_shape=(2, 7, 6))
    check(g, batch=11)


@pytest.mark.parametrize("layout", ["shared", "per_axis", "per_element", "axis1"])
def test_binarize(layout):
    rng = np.random.default_rng(4)
    shape = (3, 4)
    th = {"shared": rng.normal(size=3), "per_axis": rng.normal(size=(3, 2)),
          "per_element": rng.normal(size=(3, 4, 2)), "axis1": rng.normal(size=(4, 2))}[layout]
    axis = 1 if layout == "axis1" else 0
    g = chain(ir.Binarize(np.sort(th, -1).astype(F32), axis=axis), input_shape=shape)
    check(g, batch=130)


def test_logic_tree2d_with_padding_and_orpool():
    rng = np.random.default_rng(5)
    K, depth = 3, 3
    L = 2 ** depth
    leaves = np.stack([rng.integers(0, 2, (K, L)), rng.integers(0, 3, (K, L)),
                       rng.integers(0, 3, (K, L))], -1)
    g = chain(ir.LogicTree2d(leaves, rng.integers(0, 16, (K, L - 1)), (3, 3), stride=(1, 2),
                             padding=(1, 1)),
              ir.OrPool2d((3, 2), (2, 2), (1, 1)), ir.Flatten(start_dim=0),
              input_shape=(2, 6, 7), elem="bit")
    check(g, batch=200)


def test_orpool_1x1_and_full():
    g = chain(ir.OrPool2d((1, 1), (1, 1)), ir.OrPool2d((2, 3), (1, 1)), ir.Flatten(start_dim=0),
              input_shape=(1, 4, 5), elem="bit")
    check(g, batch=65)


@pytest.mark.parametrize("m", [1, 3, 8, 13, 800])
def test_groupsum_counts(m):
    """Group widths below, at and above the carry-save block (8) and big counts."""
    k = 3
    g = chain(ir.GroupSum(k, tau=3.0, beta=0.5), input_shape=(k * m,), elem="bit")
    rng = np.random.default_rng(m)
    mm = polyir.compile(g, "c")
    for p in (0.0, 0.5, 1.0):  # all zero, random, all one (the largest count)
        x = (rng.random((70, k * m)) < p).astype(F32)
        want = (x.reshape(70, k, m).sum(-1) + F32(0.5)) / F32(3.0)
        np.testing.assert_array_equal(mm(x), want.astype(F32))


NEURONS = {
    "I": lambda n, r: ir.I(r=r.uniform(0.5, 2, n).astype(F32)),
    "IF": lambda n, r: ir.IF(r=r.uniform(0.5, 2, n).astype(F32),
                             v_threshold=r.uniform(0.01, 0.03, n).astype(F32),
                             v_reset=r.uniform(-0.01, 0, n).astype(F32)),
    "LI": lambda n, r: ir.LI(tau=r.uniform(5e-3, 2e-2, n).astype(F32), r=r.uniform(.5, 2, n).astype(F32),
                             v_leak=r.normal(size=n).astype(F32) * 0.1),
    "LIF": lambda n, r: ir.LIF(tau=r.uniform(5e-3, 2e-2, n).astype(F32), r=r.uniform(.5, 2, n).astype(F32),
                               v_leak=r.normal(size=n).astype(F32) * 0.1,
                               v_threshold=r.uniform(0.1, 0.3, n).astype(F32)),
    "CubaLI": lambda n, r: ir.CubaLI(tau_syn=r.uniform(3e-3, 1e-2, n).astype(F32),
                                     tau_mem=r.uniform(1e-2, 3e-2, n).astype(F32),
                                     r=r.uniform(.5, 2, n).astype(F32),
                                     v_leak=np.zeros(n, F32), w_in=r.uniform(.5, 2, n).astype(F32)),
    "CubaLIF": lambda n, r: ir.CubaLIF(tau_syn=r.uniform(3e-3, 1e-2, n).astype(F32),
                                       tau_mem=r.uniform(1e-2, 3e-2, n).astype(F32),
                                       r=r.uniform(.5, 2, n).astype(F32), v_leak=np.zeros(n, F32),
                                       v_threshold=r.uniform(0.05, 0.2, n).astype(F32),
                                       w_in=r.uniform(.5, 2, n).astype(F32)),
}


@pytest.mark.parametrize("kind", sorted(NEURONS))
def test_neuron_sequence(kind):
    rng = np.random.default_rng(len(kind))
    n = 5
    g = ir.Graph(metadata={"dt": 1e-3})
    g.add("x", ir.Input((3,)))
    g.add("fc", ir.Affine(rng.normal(size=(n, 3)).astype(F32), np.zeros(n, F32)))
    g.add("cell", NEURONS[kind](n, rng))
    g.add("y", ir.Output((n,)))
    g.connect("x", "fc")
    g.connect("fc", "cell")
    g.connect("cell", "y")
    m = polyir.compile(g, "c")
    seq = (3 * rng.normal(size=(40, 67, 3))).astype(F32)
    got = m.run(seq)
    want = Ref(g).sequence(seq)[0]
    assert got.shape == (40, 67, n)
    if kind.endswith("F"):  # spikes: equal except where float rounding flips a threshold test
        assert np.mean(got != want) < 0.01
        assert got.sum() > 0, "the test should make some spikes"
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if HAVE_TORCH_IMPORTER:
        tw = polyir.compile(g, "torch").run(seq)
        if kind.endswith("F"):
            assert np.mean(got != tw) < 0.01
        else:
            np.testing.assert_allclose(got, tw, rtol=1e-4, atol=1e-5)
    # __call__ is one step from rest
    np.testing.assert_allclose(m(seq[0]), got[0], rtol=1e-6, atol=1e-7)


def test_recurrent_graph_and_dt_option():
    g = family_graphs()["leaky_integrators"]
    rng = np.random.default_rng(7)
    seq = (200 * rng.normal(size=(30, 21, 3))).astype(F32)
    m = polyir.compile(g, "c")
    got = m.run(seq)
    want = Ref(g).sequence(seq)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if HAVE_TORCH_IMPORTER:
        np.testing.assert_allclose(got, polyir.compile(g, "torch").run(seq), rtol=1e-4, atol=1e-5)
    # dt from the option overrides the metadata and changes the answer
    m2 = polyir.compile(g, "c", dt=2e-3)
    want2 = Ref(g, dt=2e-3).sequence(seq)[0]
    np.testing.assert_allclose(m2.run(seq), want2, rtol=1e-4, atol=1e-5)
    assert not np.allclose(want, want2)


def test_missing_dt_is_a_clear_error():
    g = family_graphs()["leaky_integrators"]
    g.metadata.pop("dt")
    with pytest.raises(polyir.GraphError, match="dt"):
        polyir.compile(g, "c")


def test_ruleset_not_supported():
    g = family_graphs()["rules"]
    with pytest.raises(polyir.GraphError, match="not supported by the C backend"):
        polyir.compile(g, "c")


# ---------------------------------------------------------------------------------------------
# families, seeded random graphs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["ffnn", "cnn", "logic", "logic_conv"])
def test_demo_families(family):
    g = family_graphs()[family]
    check(g, batch=77)


def random_logic_net(rng, n_in=30, widths=(64, 48), k=4):
    nodes = [ir.Binarize(np.sort(rng.normal(size=3)).astype(F32))]
    prev = n_in * 3
    for w in widths:
        nodes.append(ir.LogicLayer(rng.integers(0, prev, w), rng.integers(0, prev, w),
                                   rng.integers(0, 16, w)))
        prev = w
    nodes.append(ir.GroupSum(k, tau=float(rng.uniform(0.5, 3))))
    return chain(*nodes, input_shape=(n_in,))


def random_mlp(rng):
    sizes = [int(rng.integers(1, 9)) for _ in range(int(rng.integers(2, 5)))]
    nodes = []
    for a, b in zip(sizes, sizes[1:]):
        nodes.append(ir.Affine(rng.normal(size=(b, a)).astype(F32), rng.normal(size=b).astype(F32)))
        nodes.append(ir.Activation(str(rng.choice(sorted(ir.ACTIVATIONS)))))
    return chain(*nodes)


@pytest.mark.parametrize("seed", range(3))
def test_random_families(seed):
    rng = np.random.default_rng(100 + seed)
    check(random_logic_net(rng, widths=tuple(int(w) for w in rng.integers(8, 80, 3)) + (40,)),
          batch=int(rng.integers(1, 600)), seed=seed)
    check(random_mlp(rng), batch=int(rng.integers(1, 300)), seed=seed, rtol=1e-4, atol=1e-5)


def test_fan_in_sum_and_two_inputs_two_outputs():
    rng = np.random.default_rng(8)
    g = ir.Graph()
    g.add("a", ir.Input((3,)))
    g.add("b", ir.Input((3,)))
    g.add("fa", ir.Linear(rng.normal(size=(4, 3)).astype(F32)))
    g.add("fb", ir.Linear(rng.normal(size=(4, 3)).astype(F32)))
    g.add("act", ir.Activation("tanh"))
    g.add("y1", ir.Output((4,)))
    g.add("y2", ir.Output((4,)))
    for e in [("a", "fa"), ("b", "fb"), ("fa", "act"), ("fb", "act"), ("act", "y1"), ("fa", "y2")]:
        g.connect(*e)
    m, xs, got = check(g, batch=50)
    assert len(got) == 2


# ---------------------------------------------------------------------------------------------
# batch sizes, threads, bad input
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def logic_model():
    rng = np.random.default_rng(9)
    g = random_logic_net(rng)
    return g, polyir.compile(g, "c", threads=3)


@pytest.mark.parametrize("batch", [0, 1, 63, 64, 65, 255, 257, 1000])
def test_batch_sizes(logic_model, batch):
    g, m = logic_model
    x = np.random.default_rng(batch).normal(size=(batch, 30)).astype(F32)
    y = m(x)
    assert y.shape == (batch, 4) and y.dtype == F32
    np.testing.assert_array_equal(y, Ref(g)(x)[0])


def test_threads_agree(logic_model):
    g, m = logic_model
    x = np.random.default_rng(0).normal(size=(5000, 30)).astype(F32)
    ys = [m(x, threads=t) for t in (1, 2, 7, 64)]
    for y in ys[1:]:
        np.testing.assert_array_equal(y, ys[0])


def test_input_conversion(logic_model):
    g, m = logic_model
    x = np.random.default_rng(1).normal(size=(100, 60))
    want = m(np.ascontiguousarray(x[:, ::2], dtype=F32))
    np.testing.assert_array_equal(m(x[:, ::2]), want)             # float64, non-contiguous
    np.testing.assert_array_equal(m(np.asfortranarray(x[:, :30])), m(x[:, :30].astype(F32)))
    np.testing.assert_array_equal(m(x[:, ::2].tolist()), want)    # nested lists


def test_bit_input_dtypes():
    g = chain(ir.LogicLayer([0, 1], [1, 2], [6, 1]), input_shape=(3,), elem="bit")
    m = polyir.compile(g, "c")
    x = np.random.default_rng(2).integers(0, 2, (90, 3))
    want = m(x.astype(F32))
    for v in (x.astype(bool), x.astype(np.uint8), x.astype(np.int64), x.astype(F32)[:, [2, 1, 0]][:, ::-1]):
        np.testing.assert_array_equal(m(v), want)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4, 29), F32), r"shape \(4, 29\), expected \(batch, 30\)"),
    (np.zeros((30,), F32), r"expected \(batch, 30\).*x\[None\]"),
    (np.zeros((2, 4, 30), F32), r"expected \(batch, 30\)"),
    (np.array([["a"] * 30]), "dtype"),
    (np.zeros((3, 30), complex), "dtype"),
])
def test_bad_input_refused(logic_model, bad, match):
    g, m = logic_model
    with pytest.raises(polyir.GraphError, match=match):
        m(bad)


def test_wrong_number_of_inputs(logic_model):
    g, m = logic_model
    with pytest.raises(polyir.GraphError, match="1 Input"):
        m(np.zeros((2, 30), F32), np.zeros((2, 30), F32))
    with pytest.raises(polyir.GraphError, match=r"\(T, batch, 30\)"):
        m.run(np.zeros((2, 30), F32))


def test_stateless_run_is_batch_over_time(logic_model):
    g, m = logic_model
    seq = np.random.default_rng(3).normal(size=(3, 70, 30)).astype(F32)
    np.testing.assert_array_equal(m.run(seq), m(seq.reshape(210, 30)).reshape(3, 70, 4))


# ---------------------------------------------------------------------------------------------
# source, cache, compiler errors
# ---------------------------------------------------------------------------------------------

def test_source_is_readable_and_standalone(tmp_path):
    g = family_graphs()["logic"]
    m = polyir.compile(g, "c")
    src = m.source
    assert "int polyir_run(" in src and "Entry points" in src
    for name in g.nodes:
        if name not in ("input", "output"):
            assert f"/* node '{name}'" in src
    # it builds on its own, outside polyir, with a small main()
    main = tmp_path / "main.c"
    main.write_text(src + textwrap.dedent("""
        #include <stdio.h>
        int main(void) {
          float x[2 * 5] = {0.1f, 0.3f, 0.6f, 0.9f, 0.0f, 1, 1, 1, 1, 1};
          float y[2 * 3];
          const void* in[1] = {x};
          void* out[1] = {y};
          if (polyir_run(in, out, 1, 2, 1)) return 1;
          for (int i = 0; i < 6; i++) printf("%g\\n", y[i]);
          return 0;
        }"""))
    exe = tmp_path / "main"
    subprocess.run(["cc", "-O1", str(main), "-o", str(exe), "-lm", "-pthread"], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    x = np.array([[0.1, 0.3, 0.6, 0.9, 0.0], [1] * 5], F32)
    np.testing.assert_array_equal(np.array(out, F32).reshape(2, 3), m(x))


def test_cache_hit_and_key(tmp_path):
    g = family_graphs()["ffnn"]
    a = polyir.compile(g, "c", cache_dir=tmp_path)
    b = polyir.compile(g, "c", cache_dir=tmp_path)
    assert not a.cache_hit and b.cache_hit and a.path == b.path
    c = polyir.compile(g, "c", cache_dir=tmp_path, portable=True)
    assert c.path != a.path  # flags are part of the key
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".c", ".c", ".sha256", ".sha256",
                                                            ".so", ".so"]


def test_two_processes_compile_the_same_graph_at_once(tmp_path):
    """Both builds run concurrently into one empty cache; both results load and agree."""
    graph_file = tmp_path / "g.h5"
    polyir.save(random_logic_net(np.random.default_rng(11), widths=(300, 200)), graph_file)
    script = textwrap.dedent(f"""
        import sys, numpy as np, polyir
        g = polyir.load({str(graph_file)!r})
        m = polyir.compile(g, "c", cache_dir={str(tmp_path / 'cache')!r})
        x = np.random.default_rng(0).normal(size=(500, 30)).astype(np.float32)
        np.save(sys.argv[1], m(x))
        print(m.cache_hit)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"y{k}.npy")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e
    y0, y1 = np.load(tmp_path / "y0.npy"), np.load(tmp_path / "y1.npy")
    np.testing.assert_array_equal(y0, y1)
    files = sorted(f.name for f in (tmp_path / "cache").iterdir())
    assert len(files) == 3 and not any(f.startswith(".") for f in files), files  # no temp left


def test_compiler_missing_and_failing(tmp_path):
    g = family_graphs()["ffnn"]
    with pytest.raises(CompileError, match="not found"):
        polyir.compile(g, "c", cc="/no/such/cc", cache_dir=tmp_path)
    with pytest.raises(CompileError, match="no-such-flag") as info:
        polyir.compile(g, "c", extra_flags=["--no-such-flag"], cache_dir=tmp_path)
    assert "failed" in str(info.value)
    assert not any(tmp_path.iterdir())  # nothing half-written left behind


def test_packed_bit_input():
    """Bits given as numpy.packbits rows (little bit order) give the same answers, for widths
    around the 64-bit chunk and the 16-chunk staging group."""
    from polyir.backends.c import pack_bits
    rng = np.random.default_rng(12)
    for n in (3, 64, 70, 1100):
        g = chain(ir.LogicLayer(rng.integers(0, n, 50), rng.integers(0, n, 50),
                                rng.integers(0, 16, 50)), input_shape=(n,), elem="bit")
        m = polyir.compile(g, "c")
        x = rng.integers(0, 2, (300, n)).astype(np.uint8)
        want = Ref(g)(x)[0]
        np.testing.assert_array_equal(m(x), want)
        np.testing.assert_array_equal(m(pack_bits(x), packed=True), want)
        with pytest.raises(polyir.GraphError, match="packed input"):
            m(x, packed=True)


@pytest.mark.parametrize("word_bits, portable", [(64, False), (512, False), (256, True)])
def test_bit_input_packing_every_lane(word_bits, portable):
    """uint8 and bool bit inputs are packed into the tile words by the program itself (in 16-,
    32- or 64-byte vectors: portable=True builds the 16-byte form): an Input -> Output graph
    gives every sample's every bit back, in every lane position, for widths around the vector
    and the 64-feature block and batches that are not whole words; rows packed here with
    numpy.packbits (packed=True) give the same."""
    rng = np.random.default_rng(21)
    for n in (7, 64, 130):
        m = polyir.compile(ir.Graph.sequential(input_shape=(n,), input_elem="bit"), "c",
                           word_bits=word_bits, portable=portable)
        for batch in (1, 63, 65, word_bits + 9, 2 * word_bits - 1):
            x = rng.integers(0, 2, (batch, n), dtype=np.uint8)
            want = x.astype(F32)
            np.testing.assert_array_equal(m(x), want)
            np.testing.assert_array_equal(m(x.astype(bool)), want)
            rows = np.packbits(x, axis=1, bitorder="little")
            np.testing.assert_array_equal(m(rows, packed=True), want)


def test_bit_input_values_other_than_0_1_are_refused_by_the_packing_loop():
    """A uint8 (or a bool array holding another byte) with a 2 or 255 anywhere -- first or last
    sample, a partial word, the last feature of a partial 64-feature block -- is a GraphError
    naming the input and the value, from __call__ and run() alike."""
    g = ir.Graph.sequential(input_shape=(70,), input_elem="bit")
    m = polyir.compile(g, "c", word_bits=256)
    x = np.random.default_rng(22).integers(0, 2, (300, 70), dtype=np.uint8)
    for s, f, v in ((0, 0, 2), (299, 69, 255), (150, 64, 2), (257, 3, 128), (5, 40, 3)):
        bad = x.copy()
        bad[s, f] = v
        for arr in (bad, bad.view(bool)):
            with pytest.raises(polyir.GraphError, match=f"node 'input'.*value {v}"):
                m(arr)
        with pytest.raises(polyir.GraphError, match=f"value {v}"):
            m.run(bad.reshape(3, 100, 70))
    np.testing.assert_array_equal(m(x), x.astype(F32))  # and the program still works after


@pytest.mark.parametrize("fn", ["exp", "tanh", "sigmoid", "silu"])
def test_vectorised_exp_tanh_accuracy(fn):
    """The C backend's own expf/tanhf: a few float32 ulp from the float64 truth over the whole
    range, including overflow, underflow to subnormals, +-inf and NaN."""
    g = chain(ir.Activation(fn), input_shape=(1,))
    m = polyir.compile(g, "c")
    x = np.concatenate([np.linspace(-110, 100, 200001), np.linspace(-1, 1, 100001),
                        [0.0, -0.0, 1e-30, -1e-30, np.inf, -np.inf, np.nan]]).astype(F32)
    y = m(x[:, None])[:, 0].astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        want = act_ref(fn, 0.0, x.astype(np.float64))
    fin = np.isfinite(want) & (np.abs(want) < 3e38)
    ulp = np.spacing(np.abs(want[fin]).astype(F32)).astype(np.float64)
    err = np.abs(y[fin] - want[fin]) / np.maximum(ulp, 1e-37)  # absolute below 1e-37:
    assert np.max(err) <= 4, x[fin][np.argmax(err)]  # 1 / (1 + expf(88.8)) is 0 in any float32 formula
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    over = np.abs(want) > 3.5e38  # beyond float32: inf of the right sign (and the sliver
    np.testing.assert_array_equal(y[over], np.sign(want[over]) * np.inf)  # near FLT_MAX is skipped)


# ---------------------------------------------------------------------------------------------
# CLI: codegen, run, compare, bench
# ---------------------------------------------------------------------------------------------

def test_cli_codegen_run_compare_bench(tmp_path, capsys):
    from polyir.cli import main
    g = family_graphs()["logic"]
    f = tmp_path / "logic.h5"
    polyir.save(g, f)
    assert main(["codegen", str(f), "-o", str(tmp_path / "m.c")]) == 0
    assert "int polyir_run(" in (tmp_path / "m.c").read_text()
    x = np.random.default_rng(0).normal(size=(40, 5)).astype(F32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(f), "--input", str(tmp_path / "x.npy"), "--backend", "c",
                 "--output", str(tmp_path / "y.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), Ref(g)(x)[0])
    capsys.readouterr()
    assert main(["compare", str(f), "--backends", "torch,c", "--json"]) == 0
    import json
    res = json.loads(capsys.readouterr().out)
    assert res["ok"] and res["results"][0]["mismatches"] == 0
    # a tolerance nothing meets: the comparison fails and says so
    assert main(["compare", str(f), "--backends", "torch,c", "--atol", "-1", "--rtol", "0"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    assert main(["bench", str(f), "--backend", "c", "--batch", "1000", "--repeat", "1",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples_per_second"] > 0


def test_cli_compare_stateful_and_unsupported(tmp_path, capsys):
    from polyir.cli import main
    fams = family_graphs()
    polyir.save(fams["leaky_integrators"], tmp_path / "li.h5")
    polyir.save(fams["rules"], tmp_path / "rules.h5")
    assert main(["compare", str(tmp_path / "li.h5"), "--batch", "50", "--steps", "10"]) == 0
    assert "sequence inputs (10, 50, 3)" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "rules.h5")]) == 1
    assert "not supported by the C backend" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("portable", [False, True])
def test_real_input_rows_reach_the_tile_unchanged(dtype, portable):
    """Real inputs are transposed into the tile in square blocks of a vector's width: 37
    features (whole blocks and a rest, at every vector width) and batches that end inside a group
    of samples come through bit-identical (a Scale by 1) and give numpy's Affine."""
    rng = np.random.default_rng(21)
    n = 37
    w, b = rng.normal(size=(3, n)).astype(dtype), rng.normal(size=3).astype(dtype)
    g = ir.Graph()
    g.add("x", ir.Input((n,)))
    g.add("affine", ir.Affine(w, b))
    g.add("same", ir.Scale(np.ones(n, dtype)))
    g.add("y_affine", ir.Output((3,)))
    g.add("y_same", ir.Output((n,)))
    for a, z in [("x", "affine"), ("x", "same"), ("affine", "y_affine"), ("same", "y_same")]:
        g.connect(a, z)
    m = polyir.compile(g, "c", portable=portable)
    for batch in (1, 17, 70):
        x = rng.normal(size=(batch, n)).astype(dtype)
        x[:, 0] = -0.0  # the sign of zero survives a copy
        got_affine, got_same = m(x)
        assert got_same.dtype == dtype
        np.testing.assert_array_equal(got_same, x)
        assert np.signbit(got_same[:, 0]).all()
        want = x.astype(np.float64) @ w.T.astype(np.float64) + b
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got_affine, want, rtol=tol, atol=tol)


def test_float64_graph_computes_in_double():
    """A graph with float64 parameters runs in double (as polyir.to_torch does)."""
    rng = np.random.default_rng(13)
    g = chain(ir.Affine(rng.normal(size=(9, 4)), rng.normal(size=9)), ir.Activation("tanh"),
              ir.Affine(rng.normal(size=(3, 9)), rng.normal(size=3)), ir.Activation("sigmoid"))
    m = polyir.compile(g, "c")
    x = rng.normal(size=(300, 4))
    y = m(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, Ref(g)(x)[0], rtol=1e-13, atol=1e-14)
    n = 4
    s = ir.Graph(metadata={"dt": 1e-3})
    s.add("x", ir.Input((n,)))
    s.add("li", ir.LI(tau=rng.uniform(5e-3, 2e-2, n), r=np.ones(n), v_leak=np.zeros(n)))
    s.add("y", ir.Output((n,)))
    s.connect("x", "li")
    s.connect("li", "y")
    seq = rng.normal(size=(50, 7, n))
    v, want = np.zeros((7, n)), []
    for t in range(50):
        v = v + (1e-3 / s.nodes["li"].tau) * ((0 - v) + 1.0 * seq[t])
        want.append(v)
    np.testing.assert_allclose(polyir.compile(s, "c").run(seq), np.stack(want), rtol=1e-12)



def test_float64_graphs_match_torch_in_double():
    """float64 graphs run every real op in double: polyir.to_torch in float64 agrees to 1e-12
    (float32 arithmetic anywhere would miss by about 1e-7), multi-spike neurons spike for
    spike."""
    rng = np.random.default_rng(41)
    dense = []
    for fn in sorted(ir.ACTIVATIONS):
        dense += [ir.Affine(0.5 * rng.normal(size=(6, 6)), 0.1 * rng.normal(size=6)),
                  ir.Activation(fn)]
    cnn = [ir.Conv2d(None, rng.normal(size=(3, 2, 3, 3)), bias=rng.normal(size=3), padding=(1, 1)),
           ir.MaxPool2d((2, 2), (2, 2)), ir.AvgPool2d((1, 2), (1, 1)), ir.Flatten(start_dim=0),
           ir.LayerNorm((18,), rng.normal(size=18), rng.normal(size=18)), ir.Softmax(-1, log=True)]
    for graph, shape in ((chain(*dense, input_shape=(6,)), (6,)),
                         (chain(*cnn, input_shape=(2, 6, 6)), (2, 6, 6))):
        x = rng.normal(size=(40,) + shape)
        got = polyir.compile(graph, "c")(x)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, polyir.compile(graph, "torch")(x), rtol=1e-12, atol=1e-12)
    n = 5
    s = ir.Graph(metadata={"dt": 1e-3})
    s.add("x", ir.Input((3,)))
    s.add("fc", ir.Affine(rng.normal(size=(n, 3)), np.zeros(n)))
    s.add("lif", ir.LIF(rng.uniform(5e-3, 2e-2, n), np.ones(n), np.zeros(n), np.full(n, 0.05),
                        reset_mode="subtract", spike_rule="multi"))
    s.add("y", ir.Output((n,)))
    s.connect("x", "fc")
    s.connect("fc", "lif")
    s.connect("lif", "y")
    seq = 20 * rng.normal(size=(30, 9, 3))
    got = polyir.compile(s, "c").run(seq)
    assert got.dtype == np.float64 and got.max() >= 2, "the test should make several spikes"
    np.testing.assert_array_equal(got, polyir.compile(s, "torch").run(seq))

def spike_net(n_in, n_hidden, n_out, rng, w1=None):
    """Input -> Affine -> LIF -> Linear -> LIF, with the Affines' values as outputs too."""
    g = ir.Graph(metadata={"dt": 1e-3})
    g.add("x", ir.Input((n_in,)))
    if w1 is None:
        w1 = (rng.normal(size=(n_hidden, n_in)) / np.sqrt(n_in) * 3).astype(F32)
    g.add("fc1", ir.Affine(w1, rng.normal(size=n_hidden).astype(F32) * 0.05))
    g.add("lif1", ir.LIF(tau=np.full(n_hidden, 2e-2, F32), r=np.ones(n_hidden, F32),
                         v_leak=np.zeros(n_hidden, F32), v_threshold=np.full(n_hidden, 0.1, F32)))
    g.add("fc2", ir.Linear((rng.normal(size=(n_out, n_hidden)) / np.sqrt(n_hidden) * 3).astype(F32)))
    g.add("lif2", ir.LIF(tau=np.full(n_out, 2e-2, F32), r=np.ones(n_out, F32),
                         v_leak=np.zeros(n_out, F32), v_threshold=np.full(n_out, 0.1, F32)))
    for name, n in (("fc1_out", n_hidden), ("spikes1", n_hidden), ("fc2_out", n_out),
                    ("spikes2", n_out)):
        g.add(name, ir.Output((n,)))
    for e in (("x", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("fc1", "fc1_out"),
              ("lif1", "spikes1"), ("fc2", "fc2_out"), ("lif2", "spikes2")):
        g.connect(*e)
    return g


def spike_train(rng, steps, batch, n_in):
    """Bernoulli(0.1) inputs holding counts 1 or 2."""
    x = (rng.random((steps, batch, n_in)) < 0.1) * rng.integers(1, 3, (steps, batch, n_in))
    return x.astype(F32)


def check_spike_net(g, seq, outputs, spike_mismatch=0.0):
    """A spike_net run: its mat-vecs against numpy's (float32 sums in another order: within
    1e-5 of the absolute sum), its spikes against the torch import's (all equal, or at most the
    given fraction)."""
    fc1, spikes1, fc2, spikes2 = outputs
    w1, b1 = g.nodes["fc1"].weight.astype(np.float64), g.nodes["fc1"].bias.astype(np.float64)
    w2 = g.nodes["fc2"].weight.astype(np.float64)
    for got, x, w, b in ((fc1, seq, w1, b1), (fc2, spikes1, w2, 0.0)):
        want = x.astype(np.float64) @ w.T + b
        scale = np.abs(x.astype(np.float64)) @ np.abs(w).T + np.abs(b)
        assert np.all(np.abs(got - want) <= 1e-5 * scale + 1e-6)
    assert spikes1.sum() > 0 and spikes2.sum() > 0, "the test should make spikes"
    t_spikes1, t_spikes2 = polyir.compile(g, "torch").run(seq)[1::2]
    for got, want in ((spikes1, t_spikes1), (spikes2, t_spikes2)):
        assert np.mean(got != want) <= spike_mismatch


def spike_paths(m):
    """Per mat-vec of the compiled program, in order: whether lowering marks it spike-fed."""
    return [bool(op.attrs.get("sparse_input")) for op in m.program.ops if op.op == "matvec"]


def c_forms(m):
    """Per mat-vec of a C program, in order, the form C computes it in: 'rows' or 'tile'
    (spike-fed, reading a graph input's rows or the tile), 'dense'."""
    from polyir.backends.c_matvec import form
    return [form(m.program, op) for op in m.program.ops if op.op == "matvec"]


@pytest.mark.parametrize("n_in,n_hidden,n_out,batch,forms", [
    (30, 1100, 7, 70, ["rows", "dense"]),  # whole register blocks of outputs and a rest
    (40, 24, 5, 3, ["dense", "dense"]),    # too few outputs for the spike-fed form
    (30, 70, 50, 37, ["rows", "tile"])])   # 37 samples: part of a vector of samples
def test_spike_fed_affines_add_active_columns(n_in, n_hidden, n_out, batch, forms):
    """Affines fed by spikes or a spike-train Input add only the weight rows of non-zero
    inputs: the values equal numpy's mat-vec of the same inputs (float32 sums in another order:
    rtol 1e-5 of the absolute sum), spikes equal the torch import's. Batches of 70, 3 and 37
    leave padding samples in the tile; two threads split 70 into two tiles, each with its own
    scratch; inputs hold counts."""
    rng = np.random.default_rng(n_hidden)
    g = spike_net(n_in, n_hidden, n_out, rng)
    m = polyir.compile(g, "c", threads=2)
    assert c_forms(m) == forms
    seq = spike_train(rng, 25, batch, n_in)
    check_spike_net(g, seq, m.run(seq))


def test_inf_weight_keeps_the_dense_sum():
    """0 * inf is NaN: an Affine holding a non-finite weight must not skip zero inputs."""
    rng = np.random.default_rng(3)
    w1 = rng.normal(size=(60, 4)).astype(F32)
    w1[2, 1] = np.inf
    g = spike_net(4, 60, 50, rng, w1=w1)
    m = polyir.compile(g, "c")
    assert c_forms(m) == ["dense", "tile"], "only the finite Linear takes the spike-fed form"
    seq = np.zeros((2, 5, 4), F32)
    seq[:, :, 0] = 1.0
    fc1 = m.run(seq)[0]
    assert np.isnan(fc1[:, :, 2]).all()  # numpy: 0 * inf + ... = nan
    np.testing.assert_allclose(fc1[:, :, 0], np.broadcast_to(w1[0, 0] + g.nodes["fc1"].bias[0],
                                                             (2, 5)), rtol=1e-6)


@pytest.mark.parametrize("dtype", [F32, np.float64])
def test_spike_train_read_twice_stays_in_the_tile(dtype):
    """An Input feeding two Affines is loaded into the tile once and both read it there: values
    against numpy (float32: rtol 1e-5 of the absolute sum; float64: 1e-12), a NaN input makes
    NaN the outputs of its own sample only, a Linear's sums start from 0."""
    rng = np.random.default_rng(5)
    w1, b1 = rng.normal(size=(60, 20)).astype(dtype), rng.normal(size=60).astype(dtype)
    w2 = rng.normal(size=(50, 20)).astype(dtype)
    g = ir.Graph(metadata={"dt": 1e-3})
    g.add("x", ir.Input((20,)))
    g.add("a", ir.Affine(w1, b1))
    g.add("b", ir.Linear(w2))
    g.add("lif", ir.LIF(tau=np.full(60, 2e-2, dtype), r=np.ones(60, dtype),
                        v_leak=np.zeros(60, dtype), v_threshold=np.full(60, 0.5, dtype)))
    for name, n in (("ya", 60), ("yb", 50), ("spikes", 60)):
        g.add(name, ir.Output((n,)))
    for e in (("x", "a"), ("x", "b"), ("a", "ya"), ("b", "yb"), ("a", "lif"), ("lif", "spikes")):
        g.connect(*e)
    m = polyir.compile(g, "c")
    assert c_forms(m) == ["tile", "tile"]
    seq = ((rng.random((4, 19, 20)) < 0.2) * rng.integers(1, 3, (4, 19, 20))).astype(dtype)
    seq[2, 5, 3] = np.nan
    ya, yb, _ = m.run(seq)
    rtol = 1e-5 if dtype == F32 else 1e-12
    for got, w, b in ((ya, w1, b1), (yb, w2, 0.0)):
        assert got.dtype == dtype
        want = np.nan_to_num(seq, nan=0.0).astype(np.float64) @ w.T.astype(np.float64) + b
        scale = np.abs(np.nan_to_num(seq, nan=0.0)) @ np.abs(w.T).astype(np.float64) + np.abs(b)
        nan = np.zeros(got.shape, bool)
        nan[2, 5] = True
        assert np.isnan(got[nan]).all() and not np.isnan(got[~nan]).any()
        assert np.all(np.abs(got[~nan] - want[~nan]) <= rtol * scale[~nan] + 1e-6)


def test_dense_affine_rows_in_blocks():
    """A stateless Affine (not spike-fed) with an output count that is no multiple of the row
    block, against numpy, at a batch that leaves padding in the tile."""
    rng = np.random.default_rng(11)
    w, b = rng.normal(size=(7, 13)).astype(F32), rng.normal(size=7).astype(F32)
    g = chain(ir.Affine(w, b))
    m = polyir.compile(g, "c")
    assert c_forms(m) == ["dense"]
    x = rng.normal(size=(37, 13)).astype(F32)
    np.testing.assert_allclose(m(x), x.astype(np.float64) @ w.T + b, rtol=1e-5, atol=1e-5)
