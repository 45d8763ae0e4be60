"""torchlogix's layers for the tests (a test dependency: 0.2.x, installed --no-deps by the Makefile;
0.1.1 works too). Tests skip where torchlogix is not installed.

torchlogix 0.2.x's package __init__ imports its circuit exporter, whose source uses an f-string
form that only Python >= 3.12 parses; the layers themselves do not need it. On older Pythons the
package is set up without running that __init__, so that `torchlogix.layers` still imports."""
from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest


def load():
    try:
        return importlib.import_module("torchlogix.layers")
    except ImportError:
        pytest.skip("torchlogix is not installed")
    except SyntaxError:
        for name in [m for m in sys.modules if m == "torchlogix" or m.startswith("torchlogix.")]:
            del sys.modules[name]
        spec = importlib.util.find_spec("torchlogix")
        package = importlib.util.module_from_spec(spec)  # its __init__ is not run
        sys.modules["torchlogix"] = package
        return importlib.import_module("torchlogix.layers")


def version() -> str:
    from importlib.metadata import version as v
    return v("torchlogix")
