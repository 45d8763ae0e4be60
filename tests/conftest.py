"""Shared test fixtures. shared/ sits beside the repository root (also in CI's fresh clone)."""
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
NIR_DATA = SHARED / "testdata" / "nir"


@pytest.fixture
def nir_data() -> Path:
    """The NIR paper's reference files (../shared/testdata/nir)."""
    if not NIR_DATA.is_dir():
        pytest.skip(f"NIR reference files not found at {NIR_DATA}")
    return NIR_DATA
