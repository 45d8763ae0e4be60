"""The kind x target conformance matrix from the golden cases.

`check_case(case, target)` runs one case on one target and says "pass", "refused" (the target
does not claim a kind of the case and raised a polyir error naming it: the message is the
reason), "skip" (no reference for this target) or "fail" (with what went wrong). `matrix()`
folds every case into one cell per (kind, target): fail if any case holding the kind failed on
the target, else pass if one passed, else refused with the target's own message, else skipped.

    python tests/golden/matrix.py [--json]      # also: make conformance, polyir info --kinds
"""
from __future__ import annotations

import os
import re
import sys

import numpy as np

import polyir


def compare(name, target, outs, want, rtol, atol) -> str | None:
    """None when `outs` match `want` (exactly when rtol = atol = 0), else what differs."""
    if len(outs) != len(want):
        return f"{name} on {target}: {len(outs)} outputs, expected {len(want)}"
    for k, (got, ref) in enumerate(zip(outs, want)):
        got = np.asarray(got)
        if got.shape != ref.shape:
            return f"{name} on {target}: output {k} has shape {got.shape}, expected {ref.shape}"
        same_nan = np.isnan(got) == np.isnan(ref) if ref.dtype.kind == "f" else True
        if not np.all(same_nan):
            bad = np.argwhere(~same_nan)[0]
            return (f"{name} on {target}: output {k} NaN differs at {tuple(bad)}: "
                    f"{got[tuple(bad)]} vs {ref[tuple(bad)]}")
        if rtol == 0 and atol == 0:
            bad = np.argwhere((got != ref) & ~(np.isnan(got) & np.isnan(ref)))
            if bad.size:
                return (f"{name} on {target}: output {k}: {len(bad)} of {ref.size} values differ, "
                        f"first at {tuple(bad[0])}: {got[tuple(bad[0])]} != {ref[tuple(bad[0])]}")
            continue
        try:
            np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)
        except AssertionError as exc:
            return f"{name} on {target}: output {k}: {exc}"
    return None


def check_case(c, t) -> tuple[str, str]:
    """(status, detail) of case `c` on target `t` (see the module docstring)."""
    missing = c.kinds - t.kinds
    if missing:
        try:
            t.run(c.graph, c.inputs)
        except polyir.PolyirError as exc:
            if any(k in str(exc) for k in missing):
                return "refused", getattr(exc, "reason", str(exc)).split("\n")[0]
            return "fail", f"{c.name} on {t.name}: refused without naming {sorted(missing)}: {exc}"
        except Exception as exc:  # noqa: BLE001 - a bare error is the failure we report
            return "fail", f"{c.name} on {t.name}: {type(exc).__name__} instead of a polyir " \
                           f"error naming {sorted(missing)}: {exc}"
        return "fail", f"{c.name} on {t.name}: ran a graph with unclaimed kinds {sorted(missing)}"
    if t.name in c.refused:
        want = c.refused[t.name]
        try:
            t.run(c.graph, c.inputs)
        except polyir.PolyirError as exc:
            if want in str(exc):
                return "refused", getattr(exc, "reason", str(exc)).split("\n")[0]
            return "fail", f"{c.name} on {t.name}: refused without saying {want!r}: {exc}"
        return "fail", f"{c.name} on {t.name}: ran, but must refuse ({want!r})"
    ref = t.reference(c)
    if ref is None:
        return "skip", f"no case has a reference for {t.name} (e.g. {c.name})"
    want, rtol, atol = ref
    try:
        outs = t.run(c.graph, c.inputs)
    except Exception as exc:  # noqa: BLE001
        return "fail", f"{c.name} on {t.name}: {type(exc).__name__}: {exc}"
    problem = compare(c.name, t.name, outs, want, rtol, atol)
    return ("fail", problem) if problem else ("pass", "")


def matrix(cases=None, targets=None, progress=None):
    """{kind: {target: (status, detail)}} over every case (see the module docstring)."""
    from golden import collect
    from golden.targets import load
    cases = cases or collect()
    targets = targets or load()
    kinds = sorted(set().union(*(c.kinds for c in cases.values())))
    cells = {k: {} for k in kinds}
    for t in targets.values():
        reason = t.skip_reason()
        if reason is None:
            t.warm(list({id(c.graph): c.graph for c in cases.values()}.values()))
        results = []
        for c in cases.values():  # a target that cannot run here still shows what it refuses
            runs = not reason or (c.kinds - t.kinds and not c.refused)
            results.append((c, check_case(c, t) if runs else ("skipped", reason)))
            if progress:
                progress(t.name, c.name, results[-1][1][0])
        for k in kinds:
            mine = [r for c, r in results if k in c.kinds]
            fails = [d for s, d in mine if s == "fail"]
            if fails:
                cell = ("fail", fails[0])
            elif any(s == "pass" for s, _ in mine):
                cell = ("pass", f"{sum(s == 'pass' for s, _ in mine)} case(s)")
            elif k not in t.kinds:
                cell = ("refused", next((d for s, d in mine if s == "refused"),
                                        f"{t.name} does not claim {k}"))
            elif reason:
                cell = ("skipped", reason)
            else:
                cell = ("skipped", next((d for s, d in mine if s == "skip"), "no case"))
            cells[k][t.name] = (cell[0], _reason(cell[1]) if cell[0] != "pass" else cell[1])
    return cells


def _reason(detail: str) -> str:
    """A message without node names and the list of further nodes, so that the cells of one
    target can share it."""
    return re.sub(r"(^| )'[^']*' ?| \(also .*\)", r"\1", detail.split(" (fix:")[0]).strip()


def main(argv=None) -> int:
    """The same as `polyir info --kinds [--json]`."""
    import argparse
    from polyir.cli.conformance import conformance
    argv = sys.argv[1:] if argv is None else argv
    return conformance(argparse.Namespace(json="--json" in argv))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
