"""The house rule for the package's source: every module under polyir/ opens with a docstring
(saying its one concern) and stays under 600 lines; a module that grows past that is split along
its concerns."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600


def modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "polyir").rglob("*.py"))


def lines(module: str) -> int:
    return len((ROOT / module).read_text().splitlines())


def test_every_module_has_a_docstring():
    missing = [m for m in modules() if not ast.get_docstring(ast.parse((ROOT / m).read_text()))]
    assert not missing, f"no module docstring (say the module's one concern there): {missing}"


def test_every_module_is_short():
    long = {m: lines(m) for m in modules() if lines(m) >= MAX_LINES}
    assert not long, f"split these along their concerns into modules under {MAX_LINES} lines: " \
                     f"{long}"
