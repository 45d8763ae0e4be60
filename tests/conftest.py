"""Shared test fixtures: the NIR reference files that the repository carries in tests/data/nir,
and a check after every test that a crash still prints its Python traceback."""
import ctypes
import signal
import sys
from pathlib import Path

import pytest

import pyneuralogic

NIR_DATA = Path(__file__).resolve().parent / "data" / "nir"


@pytest.fixture
def nir_data() -> Path:
    """The NIR paper's reference files (tests/data/nir, with their licence and a README)."""
    return NIR_DATA


def _fatal_signal_handlers():
    """The C handler addresses of SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    out = []
    for sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT):
        action = ctypes.create_string_buffer(256)  # struct sigaction; sa_handler comes first
        if _LIBC.sigaction(int(sig), None, action) != 0:
            return None
        out.append(ctypes.c_void_p.from_buffer(action).value)
    return out


_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


@pytest.fixture(autouse=True)
def _crash_reporting_kept(request):
    """pytest's faulthandler prints the Python traceback of a crash. A library that installs its
    own handlers for fatal signals after it (Ray's core does) leaves a crash without one: put
    faulthandler back in front. A JVM in this process caps the main thread's stack as well (see
    tests/pyneuralogic.py), so later C code with a large stack frame crashed the whole run: fail
    the test that started one."""
    before = _fatal_signal_handlers()
    yield
    if pyneuralogic.jvm_started():
        pytest.fail("a JVM was started in the test process; call PyNeuraLogic through "
                    "pyneuralogic.call (it runs in a child Python)")
    if _fatal_signal_handlers() != before:
        import faulthandler

        from _pytest.faulthandler import fault_handler_stderr_fd_key
        fd = request.config.stash.get(fault_handler_stderr_fd_key, None)
        if fd is not None:  # None: run with -p no:faulthandler
            faulthandler.disable()  # an enabled faulthandler would not reinstall its handlers
            faulthandler.enable(file=fd)
