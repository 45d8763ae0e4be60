"""Rules that hold on every backend, checked through the golden targets (tests/golden/targets),
beside the golden matrix: the bit-input rule, NaN / inf that no compiler flag may change, and the
differences that are deliberate (documented in docs/conformance.md)."""
import warnings

import numpy as np
import pytest

import polyir as P
from golden.cases.logic import layer_relaxed
from golden.targets import load

TARGETS = load()
HARD = ["torch", "h5", "c", "cuda_emu", "cuda_gpu", "heyoka"]


def _target(name):
    t = TARGETS[name]
    reason = t.skip_reason()
    if reason:
        pytest.skip(reason)
    return t


def _and_graph():
    return P.Graph.sequential(P.LogicLayer([0], [1], [1]), input_shape=(2,), input_elem="bit")


@pytest.mark.parametrize("target", HARD)
@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, np.nan])
def test_bit_input_refuses_values_other_than_0_and_1(target, value):
    t = _target(target)
    g = _and_graph()
    ok = np.array([[0, 1], [1, 1]], np.float32)
    np.testing.assert_array_equal(t.run(g, [ok])[0], [[0], [1]])
    bad = np.array([[1, 1], [value, 1]], np.float32)
    with pytest.raises(P.GraphError, match="bit input") as err:
        t.run(g, [bad])
    assert err.value.node == "input" or "input" in str(err.value)


@pytest.mark.parametrize("target", ["c", "cuda_emu", "heyoka", "torch"])
def test_bit_input_takes_any_numeric_dtype_of_0_and_1(target):
    t = _target(target)
    g = _and_graph()
    for dtype in (np.uint8, np.int64, bool, np.float64):
        x = np.array([[0, 1], [1, 1]]).astype(dtype)
        np.testing.assert_array_equal(t.run(g, [x])[0], [[0], [1]])
    if target != "torch":  # uint8 2 is as wrong as 2.0
        with pytest.raises(P.GraphError, match="bit input"):
            t.run(g, [np.array([[2, 1]], np.uint8)])


def test_train_mode_reads_relaxed_bits():
    """Train mode relaxes by design: 0.5 AND 0.5 is the softmax mixture of relaxed gates."""
    t = _target("torch_train")
    x = np.array([[0.5, 0.5], [0.2, 0.9]], np.float32)
    want = layer_relaxed(x, np.array([0]), np.array([1]), np.array([1]))
    np.testing.assert_allclose(t.run(_and_graph(), [x])[0], want, rtol=1e-5, atol=1e-6)


def test_c_flags_keep_ieee_semantics():
    """No flag that lets the compiler assume finite values or reorder float math."""
    from polyir.backends.c import flags_for
    flags = flags_for() + flags_for(portable=True)
    for bad in ("-ffast-math", "-ffinite-math-only", "-Ofast", "-funsafe-math-optimizations",
                "-fassociative-math", "-freciprocal-math", "-fno-signed-zeros"):
        assert bad not in flags


def test_heyoka_folds_a_zero_weight_times_inf():
    """Deliberate difference: heyoka builds symbolic expressions and folds 0 * x to 0, so a weight
    of exactly 0 meeting an inf input gives 0 there; torch and C compute 0 * inf = NaN."""
    w = np.array([[0.0, 1.0]])
    g = P.Graph.sequential(P.Affine(w, np.zeros(1)), input_shape=(2,))
    x = np.array([[np.inf, 1.0]])
    for name in ("torch", "c"):
        assert np.isnan(_target(name).run(g, [x])[0][0, 0])
    assert _target("heyoka").run(g, [x])[0][0, 0] == 1.0


@pytest.mark.parametrize("target", ["torch", "c", "cuda_emu"])
def test_nan_and_inf_inputs_reach_the_output_as_ieee_says(target):
    """Every activation keeps NaN (relu included: torch's relu(NaN) is NaN, and a C `x > 0 ? x :
    0` would give 0)."""
    t = _target(target)
    fns = sorted(P.ACTIVATIONS)
    g = P.Graph()
    g.add("x", P.Input((3,)))
    for fn in fns:
        g.add(fn, P.Activation(fn))
        g.add("out_" + fn, P.Output((3,)))
        g.connect("x", fn)
        g.connect(fn, "out_" + fn)
    x = np.array([[np.nan, np.nan, 1.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        outs = t.run(g, [x])
    for fn, y in zip(fns, outs):
        assert np.isnan(y[0, :2]).all(), f"{fn}(NaN) on {target}: {y[0]}"


def test_same_padding_follows_torch_through_export():
    """torch's padding='same' with an even kernel pads one more zero at the end; the exporter
    stores that per side, and C, CUDA and the torch import give torch's own values."""
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, (4, 3), padding="same", dilation=(1, 2)))
    x = torch.randn(5, 2, 7, 6)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: 'same' with an even kernel copies
        want = model(x).numpy()
    g = P.export(model, x)
    conv = next(n for n in g.nodes.values() if isinstance(n, P.Conv2d))
    assert conv.pads == ((1, 2), (2, 2))
    for name in ("torch", "c", "cuda_emu"):
        got = _target(name).run(g, [x.numpy()])[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_same_padding_with_a_stride_is_refused():
    """'same' has no single meaning with stride > 1 (torch refuses it, other libraries split it
    their own ways): the IR refuses it when the node is built, so no backend guesses."""
    with pytest.raises(P.GraphError, match="same.*stride"):
        P.Conv2d(None, np.ones((1, 1, 3, 3), np.float32), stride=2, padding="same")
