"""`polyir info --kinds` without a file: the conformance matrix, kind x target, each cell pass,
refused (with the target's own message) or FAIL, from running the golden cases of a source
checkout (tests/golden: every kind on torch eval / train, h5, NIR, C, CUDA emulated and on a GPU,
heyoka and the heyoka ODE). An installed polyir without its tests prints which directions have a
rule for each kind instead."""
from __future__ import annotations

import sys
import time
from pathlib import Path

SHORT = {"pass": "pass", "refused": "refused", "fail": "FAIL", "skipped": "skip"}


def golden_tests() -> Path | None:
    """The tests folder of a source checkout holding the golden suite, if any."""
    tests = Path(__file__).resolve().parents[2] / "tests"
    return tests if (tests / "golden" / "matrix.py").is_file() else None


def render_matrix(cells: dict, targets: list[str]) -> str:
    """{kind: {target: (status, detail)}} as a text table, then one line per distinct reason of
    the cells that did not pass (kinds sharing a reason listed together)."""
    width = max(len(k) for k in cells) + 2
    cols = [max(len(n), 7) + 2 for n in targets]
    lines = ["kind".ljust(width) + "".join(n.ljust(w) for n, w in zip(targets, cols)).rstrip()]
    for k, row in cells.items():
        lines.append((k.ljust(width) + "".join(SHORT[row[n][0]].ljust(w)
                                               for n, w in zip(targets, cols))).rstrip())
    notes: dict = {}
    for k, row in cells.items():
        for n in targets:
            status, detail = row[n]
            if status != "pass":
                notes.setdefault((n, status, detail.replace(k, "<kind>")), []).append(k)
    if notes:
        lines.append("")
        for (n, status, detail), kinds in sorted(notes.items()):
            lines.append(f"{n} {status}: {', '.join(kinds)}: {detail}")
    return "\n".join(lines)


def conformance(args) -> int:
    """Run the golden matrix and print it (--json: the cells); exit 1 if a cell fails."""
    tests = golden_tests()
    if tests is None:
        from .tables import coverage, emit, print_coverage
        print("the golden suite (tests/golden) is not here, so no case was run; the rule "
              "tables' claims per kind:", file=sys.stderr)
        emit(args, {"coverage": coverage()}, print_coverage)
        return 0
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    from golden.matrix import matrix
    from golden.targets import load
    from .tables import emit
    t0 = time.perf_counter()
    targets = load()
    cells = matrix(targets=targets)
    seconds = time.perf_counter() - t0
    data = {k: {t: {"status": s, "detail": d} for t, (s, d) in row.items()}
            for k, row in cells.items()}
    emit(args, data, lambda: print(render_matrix(cells, list(targets))
                                   + f"\n\n({len(cells)} kinds x {len(targets)} targets, "
                                     f"{seconds:.1f} s wall)"))
    return 1 if any(s == "fail" for row in cells.values() for s, _ in row.values()) else 0
