"""polyir.export straight from Norse's cells (no NIR file): polyir's torch and C runs give
Norse's own spikes, step for step."""
import pytest

from snn_steps import compare


@pytest.mark.parametrize("cell", ["LIFBoxCell", "LIFCell"])
def test_norse_cell(cell):
    norse = pytest.importorskip("norse.torch")
    compare(getattr(norse, cell)(), 60.0)  # 10 ms membranes at dt = 1 ms need large inputs
