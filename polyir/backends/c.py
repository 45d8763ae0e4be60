"""Generated-C backend, the compile entry point: graph -> `lower.prepare` -> CRenderer
(c_render.py) -> toolchain.build (`cc -O3 [-march=native]`, cached) -> a CCompiled object that
calls the library through ctypes. Threads (pthreads) take contiguous ranges of tiles; the word
width follows the batch (narrower builds for small batches, compiled on first use).

Shared objects are cached in $POLYIR_CACHE (default ~/.cache/polyir) under a hash of the source,
the flags and the compiler's identity; a build writes a temporary file in that folder and renames
it into place, so concurrent builds of one graph never see a partial file.
"""
from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import numpy as np

from .. import ir
from ..ir.errors import GraphError
from . import Compiled
from .c_render import WORD_BITS, CRenderer
from .c_source import RUN_ERRORS
from .lower import prepare
from .program import Program
from .toolchain import build, flags_for, native_word_bits

_build_lock = threading.Lock()


class _Variant:
    """One build of a graph for one word width: the loaded library and its data tables."""

    def __init__(self, program: Program, renderer: "CRenderer", source: str, so: Path,
                 seconds: float, hit: bool):
        self.program, self.renderer, self.source, self.path = program, renderer, source, so
        self.compile_seconds, self.cache_hit = seconds, hit
        self.lib = ctypes.CDLL(str(so))
        fn = getattr(self.lib, renderer.prefix + "run_tables")
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                       ctypes.c_int64, ctypes.c_int, ctypes.c_int64]
        fn.restype = ctypes.c_int
        self.fn = fn
        self.tables = list(renderer.tables)  # kept alive: the library reads them in place
        self.table_ptrs = ((ctypes.c_void_p * max(1, len(self.tables)))(
            *[t.ctypes.data for t in self.tables]) if self.tables else None)


class CCompiled(Compiled):
    """A graph compiled to C and loaded with ctypes. See polyir.backends.Compiled.

    Pickling keeps the graph and the compile options, not the library: unpickling compiles
    again (a cache hit where the cache already holds the build), so a program can be shipped to
    Dask or Ray workers. With word_bits=None (the default) the word width follows the batch: a
    batch that fills less than half a wide word runs on a narrower build (compiled on first use).
    """

    backend = "c"
    checks_bit_bytes = True  # the packing loop refuses bytes other than 0 / 1 (POLYIR_ERR_NOT_BITS)

    def __init__(self, graph: ir.Graph, options: dict, variant: _Variant, threads: int):
        super().__init__(variant.program, variant.source)
        self._graph, self._options = graph, dict(options)
        self.threads = int(threads)
        self._variants = {variant.renderer.tile: variant}
        self._wide = variant.renderer.tile
        self._auto = options.get("word_bits") is None
        self._vlock = threading.Lock()
        self._local = threading.local()  # the packed mask of the call in this thread

    # the default (widest) build's facts
    path = property(lambda self: self._variants[self._wide].path)
    tile = property(lambda self: self._wide)
    workspace_bytes = property(lambda self: self._variants[self._wide].renderer.ws_bytes)
    compile_seconds = property(lambda self: self._variants[self._wide].compile_seconds)
    cache_hit = property(lambda self: self._variants[self._wide].cache_hit)
    tables = property(lambda self: self._variants[self._wide].tables)

    def __reduce__(self):
        return (_rebuild, (self._graph, self._options, self.threads))

    def header(self) -> str:
        """A C header declaring the entry points of this program's source."""
        v = self._variants[self._wide]
        return v.renderer.header_file(v.program)

    def word_bits_for(self, batch: int, threads: int) -> int:
        """The word width a call of `batch` samples on `threads` threads runs with."""
        if not self._auto:
            return self._wide
        per_thread = -(-batch // max(1, threads))
        w = 64
        while w < self._wide and w < per_thread:
            w *= 2
        return w

    def _variant(self, bits: int) -> _Variant:
        v = self._variants.get(bits)
        if v is None:
            with self._vlock:
                v = self._variants.get(bits)
                if v is None:
                    v = _build_variant(self._graph, dict(self._options, word_bits=bits))
                    self._variants[bits] = v
        return v

    def __call__(self, *inputs, threads: int | None = None, packed: bool = False):
        """As Compiled.__call__; with packed=True every bit input is given packed, as
        `pack_bits(x)` (numpy.packbits over the flattened features, little bit order):
        shape (batch, ceil(n / 8)) uint8 -- the fastest way in (8x less to read)."""
        if not packed:
            return super().__call__(*inputs, threads=threads)
        if len(inputs) != len(self.inputs):
            raise GraphError(f"got {len(inputs)} input array(s), the graph has "
                             f"{len(self.inputs)} Input node(s)", field="input",
                             fix="pass one array per Input, in the graph's Input order")
        arrays, mask, batch = [], 0, None
        for k, (x, (name, shape, elem)) in enumerate(zip(inputs, self.inputs)):
            if elem != "bit":
                arrays.append(self._convert(k, x, 1))
            else:
                nbytes = -(-int(np.prod(shape, dtype=np.int64)) // 8)
                x = np.asarray(x)
                if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != nbytes:
                    raise GraphError(f"packed input {k} has shape {x.shape} and dtype {x.dtype}, "
                                     f"expected uint8 (batch, {nbytes})", node=name, field="input",
                                     fix="pack it with polyir.backends.c.pack_bits(x)")
                arrays.append(np.ascontiguousarray(x))
                mask |= 1 << k
            if batch is not None and arrays[-1].shape[0] != batch:
                raise GraphError("inputs disagree on their batch size", field="input",
                                 fix="give every input the same batch size")
            batch = arrays[-1].shape[0]
        self._local.packed = mask
        try:
            return self._one(self._run(arrays, 1, batch, threads, (batch,)))
        finally:
            self._local.packed = 0

    def _execute(self, arrays, outs, steps, batch, threads):
        threads = int(self.threads if threads is None else threads) or (os.cpu_count() or 1)
        v = self._variant(self.word_bits_for(batch, threads))
        n_in, n_out = len(arrays), len(outs)
        ins = (ctypes.c_void_p * max(1, n_in))(*[a.ctypes.data for a in arrays])
        out_ptrs = (ctypes.c_void_p * max(1, n_out))(*[o.ctypes.data for o in outs])
        packed = getattr(self._local, "packed", 0)
        rc = v.fn(v.table_ptrs, ins, out_ptrs, int(steps), int(batch), threads, packed)
        if rc & RUN_ERRORS["NOT_BITS"][0]:
            raise self._non_bit_error(arrays, packed)
        if rc != 0:
            raise MemoryError(f"polyir C backend: could not allocate a "
                              f"{v.renderer.ws_bytes}-byte workspace per thread")


def _rebuild(graph, options, threads):
    return compile(graph, **dict(options, threads=threads))


def pack_bits(x) -> np.ndarray:
    """(batch, *shape) 0/1 values -> (batch, ceil(n / 8)) uint8, the packed form that
    `CCompiled.__call__(..., packed=True)` reads (x != 0 is 1)."""
    x = np.asarray(x)
    return np.packbits((x != 0).reshape(x.shape[0], -1), axis=1, bitorder="little")


def render(graph: ir.Graph, dt: float | None = None, word_bits: int = 256,
           logic: str = "table", optimize: bool = True, discretization: str | None = None,
           prefix: str = "polyir_", relayout: str = "runs") -> tuple[Program, CRenderer, str]:
    renderer = CRenderer(word_bits=word_bits, logic_mode=logic, prefix=prefix)
    program = prepare(graph, "C", renderer.tile, dt=dt, optimize=optimize,
                      discretization=discretization, multi_source=True, relayout=relayout)
    return program, renderer, renderer.render(program)


def codegen(graph: ir.Graph, **options) -> str:
    """The standalone C source for `graph`: what compile() builds for large batches. Options as
    compile's: dt, word_bits (default: the host's widest), logic, optimize, prefix, relayout."""
    return codegen_files(graph, **options)[0]


def codegen_files(graph: ir.Graph, **options) -> tuple[str, str, list[np.ndarray]]:
    """(source, header, data tables) for `graph`: what `polyir codegen` writes. The tables are
    the arrays to pass as `tables` to PREFIX_run_tables (none for most models)."""
    bits = options.get("word_bits") or native_word_bits(options.get("cc"),
                                                        options.get("portable", False))
    _, renderer, source = render(graph, options.get("dt"), bits, options.get("logic", "table"),
                                 options.get("optimize", True), options.get("discretization"),
                                 options.get("prefix", "polyir_"), options.get("relayout", "runs"))
    return source, renderer.header_file(renderer.program), list(renderer.tables)


def _build_variant(graph: ir.Graph, options: dict) -> _Variant:
    o = options
    program, renderer, source = render(graph, o.get("dt"), o["word_bits"], o.get("logic", "table"),
                                       o.get("optimize", True), o.get("discretization"),
                                       o.get("prefix", "polyir_"), o.get("relayout", "runs"))
    what = f"{program.gate_count():,} gates, {len(program.ops)} ops"
    with _build_lock:
        so, seconds, hit = build(source, o.get("cc"), o.get("portable", False),
                                 o.get("extra_flags", ()), o.get("cache_dir"),
                                 o.get("opt_level", 3), what)
    return _Variant(program, renderer, source, so, seconds, hit)


def compile(graph: ir.Graph, threads: int | None = 1, word_bits: int | None = None,  # noqa: A001
            portable: bool = False, logic: str = "table", dt: float | None = None,
            discretization: str | None = None, cc: str | None = None,
            cache_dir: str | os.PathLike | None = None, extra_flags=(),
            optimize: bool = True, opt_level: int = 3, prefix: str = "polyir_",
            relayout: str = "runs") -> CCompiled:
    """Compile `graph` to C. Options: threads (0/None = all cores), word_bits (64..512 samples
    per word; None = the host's widest for big batches, narrower for small ones), portable (drop
    -march=native), logic ('table' or 'unrolled'), dt and discretization ('euler' or 'exact'; else
    the graph's metadata, as polyir.to_torch), cc (compiler;
    default $CC or cc), cache_dir (default $POLYIR_CACHE or ~/.cache/polyir), extra_flags,
    optimize (run polyir.optimize first), opt_level (-O level, default 3), prefix (of the
    exported C symbols), relayout (the order of each logic layer's gates: 'runs', by gate id and
    first input, or 'blocked', cache-blocked; see passes.relayout_logic)."""
    if not threads:
        threads = os.cpu_count() or 1
    options = dict(word_bits=word_bits, portable=portable, logic=logic, dt=dt,
                   discretization=discretization, cc=cc,
                   cache_dir=cache_dir, extra_flags=tuple(extra_flags), optimize=optimize,
                   opt_level=opt_level, prefix=prefix, relayout=relayout)
    wide = word_bits if word_bits is not None else native_word_bits(cc, portable)
    variant = _build_variant(graph, dict(options, word_bits=wide))
    return CCompiled(graph, options, variant, threads)


__all__ = ["compile", "codegen", "codegen_files", "render", "pack_bits", "CCompiled", "CRenderer",
           "WORD_BITS", "build", "flags_for", "native_word_bits"]
