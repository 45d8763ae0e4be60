"""The compile cache: a private folder of shared objects, each verified before it is loaded.

- The folder ($POLYIR_CACHE, else $XDG_CACHE_HOME/polyir or ~/.cache/polyir) is created with mode
  0700 and refused when another user owns it or others may write to it: whoever can write there
  could make this process load their code.
- Beside each object `polyir-<key>.so` lies `polyir-<key>.sha256`, the digest of the bytes the
  compiler wrote. `verified` recomputes it before anything loads the object; a missing,
  truncated, empty or foreign object (or digest) is rebuilt in its place, never loaded.
- Temporary files carry the writer's process id (`.polyir-<key>-<pid>.<random>.c`, see
  ir/tempfiles.py); those of processes that no longer run are removed when the folder is next
  used, so an interrupted compile leaves nothing behind for long.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from ..ir import tempfiles
from . import CompileError

DIGEST_SUFFIX = ".sha256"


class CacheError(CompileError):
    """The compile cache folder cannot be used safely."""

    def __init__(self, message: str, folder, fix: str):
        self.folder = str(folder)
        super().__init__(f"compile cache {folder}: {message}", fix=fix)


def default_folder() -> Path:
    env = os.environ.get("POLYIR_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "polyir"


def folder(path: str | os.PathLike | None = None) -> Path:
    """The cache folder, created 0700 if missing; CacheError when it is not safe to load from."""
    where = Path(path) if path is not None else default_folder()
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(where)
    except OSError as exc:
        raise CacheError(f"cannot be created ({exc.strerror or exc})", where,
                         "set $POLYIR_CACHE (or cache_dir=) to a writable folder") from None
    if not stat.S_ISDIR(info.st_mode):
        raise CacheError("is not a folder", where, "remove it or point $POLYIR_CACHE elsewhere")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise CacheError(f"is owned by another user (uid {info.st_uid}); objects from it could "
                         "run their code in this process", where,
                         "use a folder of your own: set $POLYIR_CACHE or cache_dir=")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(f"may be written by other users (mode {stat.S_IMODE(info.st_mode):o})",
                         where, f"chmod 700 {where} (or use another folder)")
    remove_stale(where)
    return where


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest_path(obj: Path) -> Path:
    return obj.with_suffix(DIGEST_SUFFIX)


def verified(obj: Path) -> bool:
    """Whether `obj` exists and its bytes have the digest recorded beside it. A failing entry
    stays until the caller's rebuild replaces it (deleting it could pull the file from under
    another process that has just verified it)."""
    try:
        if obj.is_symlink() or not obj.is_file() or obj.stat().st_size == 0:
            return False
        return digest(obj) == _digest_path(obj).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return False


def temp_name(where: Path, key: str, suffix: str) -> str:
    """A new temporary file in the cache, named with this process's id."""
    return tempfiles.new(where, f".polyir-{key}-", suffix)


def publish(tmp_obj: str, obj: Path) -> None:
    """Record the digest of the freshly built `tmp_obj`, then move it into place (each step an
    atomic rename: readers see the old entry, no entry, or the new one, never a partial file)."""
    record = _digest_path(obj)
    tmp_record = temp_name(obj.parent, obj.stem.removeprefix("polyir-"), DIGEST_SUFFIX)
    try:
        Path(tmp_record).write_text(digest(Path(tmp_obj)) + "\n")
        os.replace(tmp_record, record)
    finally:
        if os.path.exists(tmp_record):
            os.unlink(tmp_record)
    os.replace(tmp_obj, obj)


def remove_stale(where: Path) -> int:
    """Remove temporary files of interrupted compiles; returns how many."""
    return sum(tempfiles.remove_stale(where, r"\.polyir-[0-9a-f]+-", suffix)
               for suffix in (".c", ".so", DIGEST_SUFFIX))
