"""The hostile-file fuzz target (tests/fuzz.py): every attack on every family, each case in a
worker subprocess under a timeout. The default suite runs a small sample; `make test-slow` (or
`pytest -m slow -s`) runs 10,000 cases and prints the counts."""
from __future__ import annotations

import json
import os

import pytest

import fuzz


def _check(report):
    print(json.dumps(report, indent=1))
    counts = report["counts"]
    assert sum(counts.values()) == report["cases"]
    assert report["failures"] == 0, report["examples"]
    # the attacks bite: files are refused, and files that load are compared
    assert counts.get("format_error", 0) > 0 and counts.get("consistent", 0) > 0, counts


def test_fuzz_sample(tmp_path):
    _check(fuzz.run(2 * len(fuzz.ATTACKS), seed=1, workers=1, timeout=60, folder=tmp_path))


@pytest.mark.slow
def test_fuzz_ten_thousand(tmp_path):
    workers = int(os.environ.get("POLYIR_FUZZ_WORKERS", "1"))
    _check(fuzz.run(int(os.environ.get("POLYIR_FUZZ_CASES", "10000")), seed=0, workers=workers,
                    timeout=60, folder=tmp_path,
                    log=lambda s: print(s, flush=True)))
