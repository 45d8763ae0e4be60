"""Every script in examples/ runs to the end (each checks its own results against torch, scipy or
the original model, and fails loudly otherwise), with short training where a script trains."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
#: script -> arguments that keep its run short
FAST_ARGS = {"logic_in_c.py": ["--epochs", "3"], "mlp_to_heyoka.py": ["--steps", "100"]}
#: scripts whose functions another test file runs and checks in detail
TESTED_ELSEWHERE = {"neural_ode_heyoka.py": "test_heyoka.py", "rules_xor.py": "test_rules.py",
                    "rules_graphs.py": "test_rules.py"}
#: a line each script prints when its checks have passed
SUCCESS = {"export_and_import.py": "same outputs as the original",
           "run_in_c.py": "C backend:",
           "nir_exchange.py": "identical to the original model's",
           "logic_in_c.py": "identical to torch's",
           "mlp_to_heyoka.py": "heyoka's integration of the MLP field vs scipy's"}


def scripts() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py"))


def test_every_example_is_run_by_a_test():
    for name in scripts():
        if name in TESTED_ELSEWHERE:
            assert name in (ROOT / "tests" / TESTED_ELSEWHERE[name]).read_text()
        else:
            assert name in SUCCESS, f"examples/{name} is run by no test: add it to SUCCESS here"


@pytest.mark.parametrize("name", [n for n in scripts() if n not in TESTED_ELSEWHERE])
def test_example_runs(name, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *FAST_ARGS.get(name, [])],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert SUCCESS[name] in result.stdout


def python_blocks(text: str) -> list[list[str]]:
    return [[line.strip() for line in block.splitlines() if line.strip()]
            for block in re.findall(r"```python\n(.*?)```", text, re.S)]


def test_readme_code_is_taken_from_the_examples():
    """Each Python block of the README is an excerpt (its lines in order) of one example script,
    so the README shows only code that the tests above run."""
    sources = {p.name: [line.strip() for line in p.read_text().splitlines()]
               for p in EXAMPLES.glob("*.py")}
    readme = (ROOT / "README.md").read_text()
    blocks = python_blocks(readme)
    assert len(blocks) >= 5
    for raw in re.findall(r"```python\n(.*?)```", readme, re.S):
        ast.parse(raw)  # a reader can paste it: indented as in the example
    for block in blocks:
        def contains(lines):
            pos = 0
            for want in block:
                try:
                    pos = lines.index(want, pos) + 1
                except ValueError:
                    return False
            return True
        assert any(contains(lines) for lines in sources.values()), \
            f"README block not found in any example:\n" + "\n".join(block)
