"""Golden cases x targets: the conformance matrix (the ONNX backend-test pattern; see
tests/golden/__init__.py and tests/golden/targets/__init__.py).

A target runs every case whose kinds it claims and must match the case's reference for it within
the case's tolerance (exactly for logic cases); for a case with a kind it does not claim it must
raise a polyir error that names the kind.
"""
import functools

import pytest

import polyir
from golden import collect
from golden.matrix import check_case
from golden.targets import load

CASES = collect()
TARGETS = load()


@functools.cache
def _warm(target: str) -> None:
    """Build every graph of the suite at once where the target can (one compiler run)."""
    t = TARGETS[target]
    t.warm(list({id(c.graph): c.graph for c in CASES.values()}.values()))


def _answers(c, t) -> bool:
    """Whether target `t` owes case `c` an answer: a reference to match, or a refusal to give.
    A pair with neither (a heyoka ODE target beside a case without a closed form) is no test."""
    return bool(c.kinds - t.kinds) or t.name in c.refused or t.reference(c) is not None


PAIRS = [(n, t) for n in sorted(CASES) for t in TARGETS if _answers(CASES[n], TARGETS[t])]


@pytest.mark.parametrize("name, target", PAIRS)
def test_golden(name, target):
    t, c = TARGETS[target], CASES[name]
    reason = t.skip_reason()
    if reason and not c.kinds - t.kinds:  # refusals are checked even where it cannot run
        pytest.skip(reason)
    _warm(target)
    status, detail = check_case(c, t)
    if status == "skip":
        pytest.skip(detail)
    assert status in ("pass", "refused"), detail


def test_every_kind_has_a_golden_case():
    covered = set().union(*(c.kinds for c in CASES.values()))
    missing = set(polyir.KINDS) - covered - {"Input", "Output", "NIRGraph"}
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


def test_every_claimed_kind_is_tried():
    """A target that claims a kind runs at least one case holding it (else its claim is
    untested): every kind a target claims appears in some case whose reference it answers to.
    (The heyoka ODE target builds its static nodes with the heyoka target's expressions, so the
    static kinds that target tries count for it.)"""
    def tried(t):
        return set().union(*(c.kinds for c in CASES.values()
                             if c.kinds <= t.kinds and t.reference(c) is not None))
    for t in TARGETS.values():
        done = tried(t) | (tried(TARGETS["heyoka"]) if t.name == "heyoka_ode" else set())
        untested = t.kinds - done - {"Input", "Output", "Graph", "NIRGraph"}
        assert not untested, f"target {t.name} claims {sorted(untested)} but no case tries them"
