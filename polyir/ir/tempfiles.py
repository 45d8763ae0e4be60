"""Temporary files that name their writer, so that those of interrupted writers can be removed.

A save (ir/h5/write.py) or a compile (backends/toolchain.py) writes
`<prefix><pid>.<random><suffix>` beside its target and renames it into place. A writer killed
before the rename leaves its file behind; the next writer into the same folder removes the files
whose process no longer runs, and any such file older than STALE_SECONDS (a process id can be
reused, a folder shared between machines).
"""
from __future__ import annotations

import os
import re
import tempfile
import time

STALE_SECONDS = 24 * 3600


def new(directory, prefix: str, suffix: str) -> str:
    """Create an empty temporary file in `directory` named after this process; its path."""
    fd, name = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=suffix, dir=directory)
    os.close(fd)
    return name


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, belongs to someone else
        return True
    return True


def remove_stale(directory, prefix_pattern: str, suffix: str) -> int:
    """Remove `<prefix><pid>.<random><suffix>` files in `directory` (prefix a regex) whose
    writer is gone; returns how many."""
    pattern = re.compile(prefix_pattern + r"(\d+)\.[A-Za-z0-9_]+" + re.escape(suffix) + r"\Z")
    removed, now = 0, time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None:
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
            if old or not _alive(int(m.group(1))):
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
    return removed
