"""The C toolchain: which compiler (and its identity, part of every cache key), the flags and
-O levels, the host's widest vector word, and `build` (source -> a cached, verified shared object,
with a progress line after a second and a timeout for a compiler that hangs).
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ..ir.errors import GraphError
from . import CompileError
from . import cache as cache_store


@functools.lru_cache(maxsize=8)
def compiler_identity(cc: str) -> str:
    path = shutil.which(cc)
    if path is None:
        raise CompileError(f"C compiler {cc!r} not found on PATH",
                           fix="install gcc or clang, or pass cc='/path/to/compiler' "
                               "(or set $CC)")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CompileError(f"C compiler {cc!r} ({path}) does not run: {exc}",
                           fix="install a working gcc or clang") from None
    return path + "\n" + (out.stdout.splitlines() or [""])[0]


OPT_LEVELS = (0, 1, 2, 3)
#: seconds a compile may take before `build` gives up (a hung or thrashing compiler)
COMPILE_TIMEOUT = 600.0


def flags_for(portable: bool = False, extra: tuple = (), opt_level: int = 3) -> list[str]:
    if opt_level not in OPT_LEVELS:
        raise GraphError(f"opt_level must be one of {OPT_LEVELS}, got {opt_level!r}",
                         field="opt_level", fix="pass opt_level=3 (the default) or 2, 1, 0")
    flags = [f"-O{opt_level}", "-std=gnu11", "-fPIC", "-shared", "-fno-strict-aliasing",
             "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
    if not portable:
        flags.append("-march=native")
    return flags + list(extra)


@functools.lru_cache(maxsize=8)
def native_word_bits(cc: str | None = None, portable: bool = False) -> int:
    """The widest word the host's vector unit holds: 512 where `cc -march=native` targets
    AVX-512, else 256 (two or four 64-bit lanes per op on other hosts: still correct)."""
    if portable:
        return 256
    cc = cc or os.environ.get("CC") or "cc"
    try:
        out = subprocess.run([compiler_identity(cc).split("\n")[0], "-march=native", "-dM", "-E",
                              "-x", "c", os.devnull], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired, CompileError):
        return 256
    return 512 if "__AVX512F__" in out.stdout else 256




def _run_compiler(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    """Run the compiler; after a second, say on stderr what is being compiled (once)."""
    import sys
    import time
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=1.0)
    except subprocess.TimeoutExpired:
        print(f"polyir: compiling {what} with {os.path.basename(cmd[0])} ...", file=sys.stderr,
              flush=True)
        try:
            out, err = proc.communicate(timeout=COMPILE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise CompileError(f"{cmd[0]} did not finish compiling {what} in "
                               f"{COMPILE_TIMEOUT:.0f} s", fix="report this with the generated "
                               "source (.source); try opt_level=1") from None
        print(f"polyir: compiled {what} in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
              flush=True)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def build(source: str, cc: str | None = None, portable: bool = False, extra_flags=(),
          cache: str | os.PathLike | None = None, opt_level: int = 3,
          what: str = "a program") -> tuple[Path, float, bool]:
    """Compile `source` into a cached shared object: (path, seconds spent compiling, cache hit)."""
    import time
    cc = cc or os.environ.get("CC") or "cc"
    ident = compiler_identity(cc)
    flags = flags_for(portable, tuple(extra_flags), opt_level)
    key = hashlib.sha256("\0".join([source, " ".join(flags), ident]).encode()).hexdigest()[:40]
    folder = cache_store.folder(cache)  # 0700, ours, stale temporary files removed
    so = folder / f"polyir-{key}.so"
    if cache_store.verified(so):  # the digest recorded beside it matches: safe to dlopen
        return so, 0.0, True
    t0 = time.perf_counter()
    tmp_c = cache_store.temp_name(folder, key, ".c")
    tmp_so = tmp_c[:-2] + ".so"
    try:
        with open(tmp_c, "w") as f:
            f.write(source)
        cmd = [ident.split("\n")[0], *flags, "-o", tmp_so, tmp_c, "-lm", "-pthread"]
        proc = _run_compiler(cmd, what)
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip()
            lines = msg.splitlines()
            if len(lines) > 40:
                msg = "\n".join(lines[:40] + [f"... ({len(lines) - 40} more lines)"])
            raise CompileError(f"{cc} failed (exit {proc.returncode}) compiling the generated C:\n"
                               f"{msg}", fix="report this with the generated source (.source); "
                                             "try portable=True if -march=native is the problem")
        cache_store.publish(tmp_so, so)  # digest, then an atomic rename into place
        src = folder / f"polyir-{key}.c"
        os.replace(tmp_c, src)
    finally:
        for p in (tmp_c, tmp_so):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    return so, time.perf_counter() - t0, False
