"""Targets "cuda_emu" and "cuda_gpu": the generated CUDA kernel.

cuda_emu compiles the very kernel source as C++ with the host shim of polyir.backends.cuda (real
threads per block meeting at a barrier for __syncthreads, blocks in turn, the grid-stride loop over
tiles) and runs it on the CPU through the backends' shared `Compiled` front (input checks, the bit
rule, output allocation). All golden graphs go into one translation unit, one kernel per C++
namespace, so the suite pays for one g++ run. Skips without g++.

cuda_gpu is polyir.compile(graph, "cuda") through CuPy on a real GPU; skips without one.
"""
from __future__ import annotations

import atexit
import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

import polyir
from polyir.backends import Compiled

from . import outputs, register_target

GXX = shutil.which("g++")
GRID, BLOCK = 2, 8  # two blocks of eight threads: the grid-stride loop and barriers are exercised
_MACROS = ("TILE", "LANE_BITS", "LANES", "POLYIR_WS_BYTES", "POLYIR_USE_SMEM", "LANE", "MAD")
_DIR = tempfile.mkdtemp(prefix="polyir-golden-cuda-")
atexit.register(shutil.rmtree, _DIR, True)


def _cuda_kinds():
    from polyir.backends.lower import lower_rule  # the CUDA backend runs every lowered kind
    return set(lower_rule.supported())


class EmulatedKernel(Compiled):
    """One kernel of an emulator library, behind the backends' Compiled interface."""

    backend = "cuda-emulated"

    def __init__(self, program, renderer, source, fn):
        super().__init__(program, source)
        self.renderer, self._fn = renderer, fn
        tables = renderer.tables  # the kernel reads them in place: kept alive with it
        self._tab = (ctypes.c_void_p * max(1, len(tables)))(*[a.ctypes.data for a in tables])

    def _execute(self, arrays, outs, steps, batch, threads):
        ins = (ctypes.c_void_p * max(1, len(arrays)))(*[a.ctypes.data for a in arrays])
        outp = (ctypes.c_void_p * max(1, len(outs)))(*[o.ctypes.data for o in outs])
        ws = np.zeros(max(1, GRID * self.renderer.ws_bytes), np.uint8)
        self._fn(ins, outp, steps, batch, ws.ctypes.data, self._tab, GRID, BLOCK)


def _unit(k: int, source: str, smem_bytes: int) -> str:
    """Kernel k in its own namespace, with its launcher `polyir_emulate_k`."""
    from polyir.backends.cuda import EMULATOR_LAUNCH
    words = max(1, -(-smem_bytes // 8))
    body = source.replace('extern "C" __global__ void polyir_kernel',
                          "__global__ void polyir_kernel")
    launch = "\n".join(line for line in EMULATOR_LAUNCH.splitlines()
                       if "POLYIR_EMU_SMEM_WORDS" not in line)
    launch = launch.replace("polyir_emulate(", f"polyir_emulate_{k}(")
    launch = launch.replace("polyir_kernel(in", f"polyir_g{k}::polyir_kernel(in")
    return (f"namespace polyir_g{k} {{\n{body}\nalignas(64) unsigned long long "
            f"polyir_smem[{words}];\n}}\n" + "".join(f"#undef {m}\n" for m in _MACROS) + launch)


def build_emulated(graphs) -> list:
    """Graphs -> EmulatedKernel per graph, from one g++ run. A graph the CUDA backend refuses
    raises its GraphError here."""
    from polyir.backends import cuda
    from polyir.backends.cuda import EMULATOR_PRELUDE
    rendered = [cuda.render(g) for g in graphs]
    units = [_unit(k, src, r.ws_bytes if r.use_smem else 8)
             for k, (_, r, src) in enumerate(rendered)]
    d = Path(tempfile.mkdtemp(dir=_DIR))
    (d / "emu.cpp").write_text(EMULATOR_PRELUDE + "\n".join(units))
    r = subprocess.run([GXX, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-Wno-unused",
                        str(d / "emu.cpp"), "-o", str(d / "emu.so")], capture_output=True,
                       text=True)
    if r.returncode:
        raise RuntimeError("the emulated CUDA kernels do not compile:\n" + r.stderr[:4000])
    lib = ctypes.CDLL(str(d / "emu.so"))
    progs = []
    for k, (program, renderer, src) in enumerate(rendered):
        fn = getattr(lib, f"polyir_emulate_{k}")
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_longlong,
                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        progs.append(EmulatedKernel(program, renderer, src, fn))
    return progs


def _runner(m):
    return lambda inputs: outputs(m.run(*inputs) if m.stateful else m(*inputs))


def prepare_emulated(graph):
    return _runner(build_emulated([graph])[0])


def prepare_emulated_many(graphs):
    """Refused graphs are prepared one by one (so each raises its own error when run)."""
    kinds = _cuda_kinds()
    ok = [g for g in graphs if {type(n).__name__ for n in g.flattened().nodes.values()}
          <= kinds | {"Input", "Output"}]
    built = dict(zip(map(id, ok), build_emulated(ok))) if ok else {}
    return [_runner(built[id(g)]) if id(g) in built else _deferred(g) for g in graphs]


def _deferred(graph):
    def run(inputs):
        return prepare_emulated(graph)(inputs)
    return run


def _no_gxx():
    return None if GXX else "g++ is not on PATH (the CUDA emulation compiles the kernel as C++)"


def _has_gpu() -> str | None:
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return None
        return "no CUDA GPU"
    except Exception as exc:  # no CuPy, no driver
        return f"no CuPy / CUDA GPU ({type(exc).__name__})"


def prepare_gpu(graph):
    m = polyir.compile(graph, "cuda")
    return _runner(m)


register_target("cuda_emu", prepare_emulated, _cuda_kinds, _no_gxx,
                prepare_many=prepare_emulated_many,
                about="the CUDA kernel source as C++ on the host shim")
register_target("cuda_gpu", prepare_gpu, _cuda_kinds, _has_gpu, about="CuPy on a CUDA GPU")
