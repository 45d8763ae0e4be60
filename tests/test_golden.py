"""Golden cases x targets (the ONNX backend-test pattern; see tests/golden/__init__.py).

A target runs every case whose kinds it claims and must match the numpy reference within the
case's tolerance (exactly for logic cases); for a case with a kind it does not claim it must raise
a polyir error that names the kind.
"""
import numpy as np
import pytest

import polyir
from golden import case_kinds, collect
from golden.targets import load

CASES = collect()
TARGETS = load()


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name, target):
    c, t = CASES[name], TARGETS[target]
    reason = t.skip_reason()
    if reason:
        pytest.skip(reason)
    missing = case_kinds(c.graph) - t.kinds
    if missing:
        with pytest.raises(polyir.PolyirError) as err:
            t.run(c.graph, c.inputs)
        assert any(k in str(err.value) for k in missing), str(err.value)
        return
    outs = t.run(c.graph, c.inputs)
    assert len(outs) == len(c.expected)
    for got, want in zip(outs, c.expected):
        assert got.shape == want.shape, f"{name} on {target}: shape {got.shape} != {want.shape}"
        if c.exact:
            bad = np.argwhere(got != want)
            assert bad.size == 0, (f"{name} on {target}: {len(bad)} of {want.size} values differ, "
                                   f"first at {tuple(bad[0])}: {got[tuple(bad[0])]} != "
                                   f"{want[tuple(bad[0])]}")
        else:
            np.testing.assert_allclose(got, want, rtol=c.rtol, atol=c.atol,
                                       err_msg=f"{name} on {target}")


# Kinds a case family does not cover yet (the rules helper owns RuleSet's cases).
UNCOVERED_OK = {"RuleSet", "NIRGraph"}


def test_every_kind_has_a_golden_case():
    covered = set().union(*(case_kinds(c.graph) for c in CASES.values()))
    missing = set(polyir.KINDS) - covered - {"Input", "Output"} - UNCOVERED_OK
    assert not missing, f"kinds without a golden case: {sorted(missing)}"


def test_golden_cases_are_registered_once():
    from golden import case
    c = next(iter(CASES.values()))
    with pytest.raises(ValueError, match="registered twice"):
        case(c.name, c.graph, c.inputs, c.expected)


def test_every_target_claims_known_kinds():
    for t in TARGETS.values():
        unknown = t.kinds - set(polyir.KINDS) - {"Graph"}
        assert not unknown, f"target {t.name} claims unknown kinds {unknown}"
