"""Shared test fixtures: the NIR reference files that the repository carries in tests/data/nir."""
from pathlib import Path

import pytest

NIR_DATA = Path(__file__).resolve().parent / "data" / "nir"


@pytest.fixture
def nir_data() -> Path:
    """The NIR paper's reference files (tests/data/nir, with their licence and a README)."""
    return NIR_DATA
