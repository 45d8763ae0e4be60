"""Target "c": the generated-C backend (polyir.compile(graph, "c")), one thread, 256-bit words.
Shared objects go to a private cache folder for the test session."""
from __future__ import annotations

import atexit
import shutil
import tempfile

import polyir

from . import outputs, register_target

_CACHE = tempfile.mkdtemp(prefix="polyir-golden-c-")
atexit.register(shutil.rmtree, _CACHE, True)


def _c_kinds():
    from polyir.backends.lower import lower_rule  # the C backend runs every lowered kind
    return {k.__name__ for k in lower_rule.rules}


def prepare_c(graph):
    m = polyir.compile(graph, "c", cache_dir=_CACHE)
    return lambda inputs: outputs(m.run(*inputs) if m.stateful else m(*inputs))


register_target("c", prepare_c, _c_kinds, about="generated C (cc -O3), ctypes")
