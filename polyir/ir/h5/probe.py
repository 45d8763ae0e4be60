"""The isolated probe: before a load reads a file, a forked child walks the same open file
(read.Reader with probe=True) under a time limit and an address-space cap, so that a corrupted
file that makes the HDF5 library loop, crash or allocate gigabytes inside one C call (which no
Python code can interrupt) costs a killed child and a FormatError, never the caller. Linux only
(fork, /proc); elsewhere load() reads in-process.
"""
from __future__ import annotations

import json
import os
import sys

from ..errors import FormatError

#: the probe's bounds: seconds (plus LOAD_TIMEOUT_PER_MB per MB of file), and bytes of memory
#: beyond what the process had (plus LOAD_MEMORY_PER_BYTE bytes per byte of the file, for arrays
#: that decompress).
LOAD_TIMEOUT = 10.0
LOAD_TIMEOUT_PER_MB = 1.0
LOAD_MEMORY = 128 << 20
LOAD_MEMORY_PER_BYTE = 32
#: whether this system can run the probe
AVAILABLE = hasattr(os, "fork") and sys.platform.startswith("linux")


def parse_isolated(reader, timeout: float, parse) -> None:
    """Run `parse(reader)` (read.parse with a probing read.Reader) in a forked child bounded in
    time and memory; raise the FormatError it found, or one saying that it hung, crashed or ran
    out of memory.

    A corrupted file can make the HDF5 library loop or allocate gigabytes inside one C call,
    which no Python code can interrupt; a child process can be killed. Forking costs a few
    milliseconds; the child walks the file without decompressing chunked arrays or building
    nodes (the Reader's probe), then the parent reads the same open file: see docs/security.md."""
    import faulthandler
    import select
    import signal
    import time

    import h5py
    budget = LOAD_MEMORY + LOAD_MEMORY_PER_BYTE * (reader.file_size or 0)
    rfd, wfd = os.pipe()
    with h5py._objects.phil:  # no other thread is inside HDF5 while the process forks
        pid = os.fork()
    if pid == 0:  # the child: parse, report, exit without running any parent cleanup
        code = 0
        try:
            os.close(rfd)
            faulthandler.disable()  # a crash is reported by the parent, not dumped here
            limit_memory(budget)
            try:
                parse(reader)
                message = ["ok"]
            except FormatError as exc:
                message = ["format", exc.reason, exc.where]
            except MemoryError:
                message = ["memory"]
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                message = ["error", f"{type(exc).__name__}: {exc}"]
            data = json.dumps(message).encode()[:1 << 16]
            while data:
                data = data[os.write(wfd, data):]
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    chunks, deadline, hung = [], time.monotonic() + timeout, False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                hung = True
                break
            chunk = os.read(rfd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        if hung:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if hung:
        raise FormatError(f"parsing did not finish within {timeout:g} s (a corrupted file can "
                          "make the HDF5 library loop); pass timeout= to load() if the file is "
                          "genuine and huge", path=reader.path)
    try:
        message = json.loads(b"".join(chunks).decode())
    except ValueError:
        message = None
    if not isinstance(message, list) or not message:
        how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit status {os.WEXITSTATUS(status)}")
        raise FormatError(f"the HDF5 library crashed parsing the file ({how}); the file is "
                          "corrupted", path=reader.path)
    if message[0] == "ok":
        return
    if message[0] == "format" and len(message) == 3:
        raise FormatError(str(message[1]), path=reader.path,
                          where=None if message[2] is None else str(message[2]))
    if message[0] == "memory":
        raise FormatError(f"parsing needs more than {budget:,} bytes of memory (a forged "
                          "length or a decompression bomb)", path=reader.path)
    raise FormatError(f"cannot be read ({message[-1]})", path=reader.path)


def limit_memory(extra: int) -> None:
    """Cap this (child) process's address space at its current size plus `extra` bytes."""
    import resource
    try:
        with open("/proc/self/statm") as fh:
            now = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = now + extra
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (OSError, ValueError):  # no /proc or no limits: the time bound still holds
        pass
