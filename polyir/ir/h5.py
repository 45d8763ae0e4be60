"""The .h5 file: NIR's HDF5 layout, extended. One writer and one reader, both driven by the kinds'
field specs, the closed kind registry and a dtype allow-list.

Arrays keep their dtype; arrays of 4 KiB and more are chunked, and gzip-compressed (with byte
shuffle) unless a sample shows a large float array would shrink by less than 15%.

Layout: root `version` (NIR layout version) and `node` (the graph: `type` = "NIRGraph", `nodes/`,
`edges` (E, 2) strings, optional `edge_ports` (E,) strings, optional `metadata/`); each node is a
group with a `type` string and one dataset per field (records and named weights are subgroups).
polyir adds a root group `polyir` with `format` (semver of this layout) and `producer`.

The reader executes nothing and imports nothing by name; it checks links, kinds, field names,
dtypes, shapes and byte sizes before reading any array, and raises FormatError for any malformed
input.
"""
from __future__ import annotations

import json
import os
import re
import sys
import warnings
import zlib
from dataclasses import MISSING, fields

import numpy as np

from . import tempfiles
from .conventions import apply_convention, convention_entry
from .errors import FormatError, GraphError, PolyirWarning
from .fields import Array, Ints, NamedArrays, Optional, Records, Scalar, Spec, Strs, specs
from .graph import Graph, edge_port
from .kinds.base import INFERRED_KEY, KINDS, inferred_fields
from .kinds.nir import Output

#: 1.1.0: Conv1d / Conv2d store zero padding per side (`padding_end`, omitted when symmetric)
#: and never the strings 'same' / 'valid'; 1.0 files migrate when their nodes are built
#: (a string is resolved by the kind, torch's 'same').
FORMAT_VERSION = "1.1.0"
NIR_LAYOUT_VERSION = "1.0.8"
#: default cap on one array's declared size, and on the sum over the file (override in load()).
MAX_ARRAY_BYTES = 2 << 30
MAX_TOTAL_BYTES = 8 << 30
#: small arrays are stored plain; larger ones chunked and compressed.
COMPRESS_MIN_BYTES = 1 << 12
#: float arrays from this size on are compressed only when a sample shows that it pays.
SAMPLE_COMPRESSION_BYTES = 1 << 18
#: node attribute listing fields written only for NIR readers (values polyir infers): the reader
#: gives them back as None, so the graph round-trips unchanged.
INFERRED_ATTR = INFERRED_KEY
#: nesting depth of graphs the reader accepts.
MAX_DEPTH = 32
#: a compressed dataset may declare at most this many times the bytes it stores (gzip cannot
#: exceed ~1032:1): more is a decompression bomb or a dataset whose data was never written.
MAX_EXPANSION = 2048
#: a fixed-length string may declare at most this many bytes (more is refused before reading).
MAX_STRING_BYTES = 1 << 20
#: HDF5 filters a dataset may use: those built into HDF5 that polyir and NIR write. Anything
#: else is refused before reading (so no filter plugin is ever looked up or loaded).
ALLOWED_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32"}
#: the parse of a file runs first in a child process with these bounds (see _parse_isolated):
#: seconds (plus LOAD_TIMEOUT_PER_MB per MB of file), and bytes of memory beyond what the
#: process had (plus LOAD_MEMORY_PER_BYTE bytes per byte of the file, for arrays that decompress).
LOAD_TIMEOUT = 10.0
LOAD_TIMEOUT_PER_MB = 1.0
LOAD_MEMORY = 128 << 20
LOAD_MEMORY_PER_BYTE = 32

_FAMILY_DTYPES = {
    "real": "f",      # float16/32/64 (checked by itemsize below)
    "int": "iu",
    "gate": "iu",
    "bool": "biu",
}


def _producer() -> str:
    try:
        from importlib.metadata import version
        return f"polyir {version('polyir')}"
    except Exception:  # running from a source tree
        return "polyir"


# ------------------------------------------------------------------------------------------------
# writing


def save(graph: Graph, path, *, compression: int = 4) -> None:
    """Validate `graph` and write it to `path` atomically (temporary file, fsync, rename): a failed
    save leaves an existing file untouched."""
    import h5py

    if not isinstance(graph, Graph):
        raise GraphError(f"save() takes a polyir.Graph, got {type(graph).__name__}",
                         fix="export or build a Graph first")
    graph.check()
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = "." + os.path.basename(path) + "."
    tempfiles.remove_stale(directory, re.escape(prefix), ".tmp")  # left by killed saves
    tmp = tempfiles.new(directory, prefix, ".tmp")
    try:
        _set_mode(tmp, path)
        with h5py.File(tmp, "w", track_order=True) as f:
            f.create_dataset("version", data=NIR_LAYOUT_VERSION, dtype=h5py.string_dtype())
            meta = f.create_group("polyir")
            meta.create_dataset("format", data=FORMAT_VERSION, dtype=h5py.string_dtype())
            meta.create_dataset("producer", data=_producer(), dtype=h5py.string_dtype())
            _write_graph(f.create_group("node", track_order=True), graph, compression)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _set_mode(tmp, path):
    """mkstemp creates 0600 files; give the new file the mode a plain open() would (or the mode
    of the file it replaces)."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)


def _write_string(group, name, value):
    import h5py
    group.create_dataset(name, data=value, dtype=h5py.string_dtype())


def _compresses(arr: np.ndarray) -> bool:
    """Whether gzip pays for this array. Index and gate arrays always compress well; large float
    arrays (trained weights, logits) often shrink by under 15% at ~15 MB/s, which would make
    saving a million-gate graph take seconds: a byte-shuffled sample decides."""
    if arr.dtype.kind != "f" or arr.nbytes < SAMPLE_COMPRESSION_BYTES:
        return True
    flat = arr.reshape(-1)
    part = (16 << 10) // arr.itemsize
    starts = np.linspace(0, flat.size - part, 4).astype(np.int64)
    sample = np.concatenate([flat[s:s + part] for s in starts])
    shuffled = sample.view(np.uint8).reshape(-1, arr.itemsize).T.tobytes()
    return len(zlib.compress(shuffled, 1)) < 0.85 * len(shuffled)


def _write_array(group, name, arr, compression):
    if arr.nbytes < COMPRESS_MIN_BYTES:
        group.create_dataset(name, data=arr, dtype=arr.dtype)
    elif _compresses(arr):
        group.create_dataset(name, data=arr, dtype=arr.dtype, compression="gzip",
                             compression_opts=compression, shuffle=True)
    else:
        group.create_dataset(name, data=arr, dtype=arr.dtype, chunks=True)


def _write_value(group, name, spec: Spec, value, compression):
    import h5py
    if value is None:
        return
    if isinstance(spec, Optional):
        spec = spec.inner
    if isinstance(value, np.ndarray):
        _write_array(group, name, value, compression)
    elif isinstance(value, str):
        _write_string(group, name, value)
    elif isinstance(value, bool):
        group.create_dataset(name, data=np.bool_(value))
    elif isinstance(value, int):
        group.create_dataset(name, data=np.int64(value))
    elif isinstance(value, float):
        group.create_dataset(name, data=np.float64(value))
    elif isinstance(spec, Strs):
        group.create_dataset(name, data=list(value), shape=(len(value),), dtype=h5py.string_dtype())
    elif isinstance(spec, Ints):
        group.create_dataset(name, data=np.asarray(value, dtype=np.int64).reshape(len(value)))
    elif isinstance(spec, Records):
        sub = group.create_group(name, track_order=True)
        for i, rec in enumerate(value):
            _write_fields(sub.create_group(str(i), track_order=True), rec, compression)
    elif isinstance(spec, NamedArrays):
        sub = group.create_group(name, track_order=True)
        for k, arr in value.items():
            _write_array(sub, k, arr, compression)
    else:  # pragma: no cover - a kind declared a field no writer knows
        raise TypeError(f"cannot store {name}={value!r}")


def _write_fields(group, record, compression):
    defaults = {f.name: f.default for f in fields(record)}
    omit = getattr(type(record), "omit_when_default", ())
    for name, spec in specs(record):
        value = getattr(record, name)
        if name in omit and value == defaults.get(name):
            continue
        _write_value(group, name, spec, value, compression)


def _write_metadata(group, metadata):
    if not metadata:
        return
    sub = group.create_group("metadata", track_order=True)
    for k, v in metadata.items():
        if isinstance(v, str):
            _write_string(sub, k, v)
        else:
            sub.create_dataset(k, data=v)


def _write_graph(group, graph: Graph, compression):
    import h5py
    _write_string(group, "type", "NIRGraph")
    types = graph.infer_types()
    fed: dict[str, dict] = {}
    for e in graph.edges:
        fed.setdefault(e[1], {}).setdefault(edge_port(e), types[e[0]])
    nodes = group.create_group("nodes", track_order=True)
    for name, node in graph.nodes.items():
        sub = nodes.create_group(name, track_order=True)
        if isinstance(node, Graph):
            _write_graph(sub, node, compression)
            continue
        _write_string(sub, "type", type(node).file_type)
        _write_fields(sub, node, compression)
        inferred = node.file_inferred(fed.get(name, {}))
        if inferred:
            spec_of = dict(specs(node))
            for k, v in inferred.items():
                _write_value(sub, k, spec_of[k], v, compression)
            sub.attrs.create(INFERRED_ATTR, data=list(inferred), dtype=h5py.string_dtype())
        _write_metadata(sub, node.metadata)
    edges = [(e[0], e[1]) for e in graph.edges]
    group.create_dataset("edges", data=np.array(edges, dtype=object).reshape(len(edges), 2),
                         dtype=h5py.string_dtype())
    if any(len(e) > 2 for e in graph.edges):
        group.create_dataset("edge_ports", data=[edge_port(e) for e in graph.edges],
                             dtype=h5py.string_dtype())
    _write_metadata(group, graph.metadata)


# ------------------------------------------------------------------------------------------------
# reading


class _Reader:
    """Reads a file by the kinds' field specs. With `probe`, it walks the file as a load would
    (every object header, link, string and contiguous array, the index of every chunked array)
    without decompressing chunked arrays or building nodes: what the bounded child process
    runs before the real read (see _parse_isolated)."""

    def __init__(self, path, max_array_bytes, max_total_bytes, strict, probe=False):
        self.probe = probe
        self.path = path
        self.max_array = max_array_bytes
        self.max_total = max_total_bytes
        self.total = 0
        self.strict = strict
        self.file_size = os.path.getsize(path) if isinstance(path, (str, os.PathLike)) else None

    def fail(self, where, message):
        return FormatError(message, path=str(self.path), where=where)

    # -- h5 objects --
    def child(self, group, name, where, want_group=None):
        import h5py
        try:
            link = group.get(name, getlink=True)
        except Exception as exc:
            raise self.fail(where, f"cannot read entry {name!r}: {exc}") from None
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise self.fail(f"{where}/{name}", f"is a {type(link).__name__}; soft and external "
                            "links are refused (they can reach outside the file)")
        try:
            obj = group[name]
        except Exception as exc:
            raise self.fail(f"{where}/{name}", f"cannot be opened: {exc}") from None
        if isinstance(obj, h5py.Dataset):
            self.check_storage(obj, f"{where}/{name}")
        if want_group is True and not isinstance(obj, h5py.Group):
            raise self.fail(f"{where}/{name}", "must be a group, found a dataset")
        if want_group is False and not isinstance(obj, h5py.Dataset):
            raise self.fail(f"{where}/{name}", "must be a dataset, found a group")
        return obj

    def check_storage(self, ds, where):
        """Refuse, before any read, a dataset whose bytes are not in this file (external raw
        storage, a virtual dataset) or that needs a filter outside ALLOWED_FILTERS."""
        from h5py import h5d
        try:
            dcpl = ds.id.get_create_plist()
            layout = dcpl.get_layout()
            external = dcpl.get_external_count()
            filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        except Exception as exc:
            raise self.fail(where, f"unreadable dataset layout: {exc}") from None
        if layout == h5d.VIRTUAL:
            raise self.fail(where, "is a virtual dataset (its data would be read from other "
                            "files); refused: polyir reads only the file it was given")
        if external:
            raise self.fail(where, "keeps its data in external file(s); refused: polyir reads "
                            "only the file it was given (re-save the graph with polyir.save)")
        if layout not in (h5d.COMPACT, h5d.CONTIGUOUS, h5d.CHUNKED):
            raise self.fail(where, f"has an unknown storage layout {layout}")
        unknown = [f for f in filters if f not in ALLOWED_FILTERS]
        if unknown:
            raise self.fail(where, f"uses HDF5 filter(s) {unknown}; allowed are "
                            f"{sorted(ALLOWED_FILTERS.values())} (re-save it with polyir.save)")

    def keys(self, group, where):
        try:
            return list(group.keys())
        except Exception as exc:
            raise self.fail(where, f"cannot list the group: {exc}") from None

    def read_dataset(self, ds, where, kinds: str | None):
        """Read a numeric dataset after checking its dtype family and declared byte size."""
        try:
            dtype, shape = ds.dtype, ds.shape
        except Exception as exc:
            raise self.fail(where, f"unreadable dataset header: {exc}") from None
        if shape is None:
            raise self.fail(where, "is an empty (null) dataset")
        if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
            raise self.fail(where, f"has dtype {dtype}, which is not allowed here (numbers only)")
        if kinds is not None and dtype.kind not in kinds:
            raise self.fail(where, f"has dtype {dtype}; expected {'float' if kinds == 'f' else 'integer'}")
        if dtype.kind == "f" and dtype.itemsize not in (2, 4, 8):
            raise self.fail(where, f"has float dtype {dtype}; allowed are float16/32/64")
        self.check_size(ds, shape, dtype.itemsize, where)
        if self.probe and ds.chunks is not None:
            self.walk_chunks(ds, where)
            return np.zeros((), dtype)
        try:
            return np.asarray(ds[()])
        except FormatError:
            raise
        except Exception as exc:
            raise self.fail(where, f"cannot be read ({type(exc).__name__}: {exc}); the file may "
                            "be truncated or use an unavailable filter") from None

    def check_size(self, ds, shape, itemsize, where):
        """Refuse a dataset by its declared size before reading it: over the per-array or
        per-file limits, larger than the file (contiguous), or far larger than what it stores."""
        nbytes = int(np.prod(shape, dtype=np.float64)) * itemsize
        if nbytes > self.max_array:
            raise self.fail(where, f"declares {nbytes:,} bytes (shape {shape}), over the limit of "
                            f"{self.max_array:,}; pass max_array_bytes= to load() if it is genuine")
        self.total += nbytes
        if self.total > self.max_total:
            raise self.fail(where, f"the file's arrays exceed {self.max_total:,} bytes in total")
        if nbytes <= 1 << 16:
            return
        try:
            chunked = ds.chunks is not None
            stored = ds.id.get_storage_size()
        except Exception as exc:
            raise self.fail(where, f"unreadable dataset layout: {exc}") from None
        if not chunked and self.file_size is not None and nbytes > self.file_size:
            raise self.fail(where, f"declares {nbytes:,} bytes but the file has only "
                            f"{self.file_size:,}: truncated or forged")
        if nbytes > MAX_EXPANSION * stored + (1 << 20):
            raise self.fail(where, f"declares {nbytes:,} bytes but stores only {stored:,}: "
                            "a forged size, unwritten data or a decompression bomb")

    def read_string(self, ds, where) -> str:
        import h5py
        if not isinstance(ds, h5py.Dataset):
            raise self.fail(where, "must be a string dataset, found a group")
        if ds.shape != () or ds.dtype.kind not in "OS" or (
                ds.dtype.kind == "O" and h5py.check_string_dtype(ds.dtype) is None):
            raise self.fail(where, f"must be a scalar string, found {ds.dtype} {ds.shape}")
        self.check_string_size(ds, where)
        try:
            value = ds[()]
        except Exception as exc:
            raise self.fail(where, f"cannot be read: {exc}") from None
        if isinstance(value, bytes):
            try:
                value = value.decode("utf8")
            except UnicodeDecodeError:
                raise self.fail(where, "is not valid UTF-8") from None
        return value

    def walk_chunks(self, ds, where):
        """Visit a chunked dataset's index (where HDF5 would find each chunk) and check that
        every chunk lies inside the file; decompressing allowed filters is bounded by itself."""
        end = self.file_size if self.file_size is not None else float("inf")
        bad = []

        def visit(info):
            if info.byte_offset is None or info.byte_offset + info.size > end:
                bad.append(info)

        try:
            if hasattr(ds.id, "chunk_iter"):
                ds.id.chunk_iter(visit)
            else:  # older HDF5: one lookup per chunk
                for i in range(ds.id.get_num_chunks()):
                    visit(ds.id.get_chunk_info(i))
        except Exception as exc:
            raise self.fail(where, f"unreadable chunk index: {exc}") from None
        if bad:
            raise self.fail(where, "has a chunk outside the file: truncated or forged")

    def check_string_size(self, ds, where):
        if ds.dtype.kind == "S" and ds.dtype.itemsize > MAX_STRING_BYTES:
            raise self.fail(where, f"declares strings of {ds.dtype.itemsize:,} bytes each, over "
                            f"the limit of {MAX_STRING_BYTES:,}")

    def read_strings(self, ds, where, ndim) -> np.ndarray:
        import h5py
        if not isinstance(ds, h5py.Dataset):
            raise self.fail(where, "must be a string dataset, found a group")
        if ds.dtype.kind not in "OS" or (ds.dtype.kind == "O"
                                          and h5py.check_string_dtype(ds.dtype) is None):
            raise self.fail(where, f"must hold strings, found {ds.dtype}")
        if ds.shape is None or len(ds.shape) != ndim:
            raise self.fail(where, f"must be {ndim}-D, found shape {ds.shape}")
        self.check_string_size(ds, where)
        self.check_size(ds, ds.shape, 16 if ds.dtype.kind == "O" else ds.dtype.itemsize, where)
        try:
            raw = ds[()]
            return np.array([v.decode("utf8") if isinstance(v, bytes) else str(v)
                             for v in np.asarray(raw, dtype=object).reshape(-1)],
                            dtype=object).reshape(ds.shape)
        except Exception as exc:
            raise self.fail(where, f"cannot be read: {exc}") from None

    # -- values by spec --
    def read_value(self, obj, spec: Spec, where):
        import h5py
        if isinstance(spec, Optional):
            spec = spec.inner
        if isinstance(spec, Records):
            if not isinstance(obj, h5py.Group):
                raise self.fail(where, "must be a group of records")
            names = self.keys(obj, where)
            if sorted(names, key=lambda s: (len(s), s)) != [str(i) for i in range(len(names))]:
                raise self.fail(where, f"record names must be 0..{len(names) - 1}, found {names}")
            return tuple(self.read_record(self.child(obj, str(i), where, True), spec.cls,
                                          f"{where}/{i}") for i in range(len(names)))
        if isinstance(spec, NamedArrays):
            if not isinstance(obj, h5py.Group):
                raise self.fail(where, "must be a group of named arrays")
            return {k: self.read_dataset(self.child(obj, k, where, False), f"{where}/{k}", "f")
                    for k in self.keys(obj, where)}
        if not isinstance(obj, h5py.Dataset):
            raise self.fail(where, "must be a dataset, found a group")
        if isinstance(spec, Strs):
            return tuple(self.read_strings(obj, where, 1))
        if isinstance(spec, Scalar) and spec.type is str:
            return self.read_string(obj, where)
        if isinstance(spec, Ints) and spec.allow_str and obj.dtype.kind in "OS":
            return self.read_string(obj, where)
        family = spec.family if isinstance(spec, Array) else None
        kinds = _FAMILY_DTYPES.get(family) if family else (
            "f" if isinstance(spec, Scalar) and spec.type is float else
            "biu" if isinstance(spec, Scalar) and spec.type is bool else
            "iuf")
        return self.read_dataset(obj, where, kinds)

    def read_record(self, group, cls, where):
        return self.build(cls, self._record_kwargs(group, cls, where), where)

    def build(self, cls, kwargs, where):
        if self.probe:
            return None
        try:
            return cls(**kwargs)
        except GraphError as exc:
            raise self.fail(where, str(exc)) from exc
        except (TypeError, ValueError) as exc:
            raise self.fail(where, f"invalid {cls.__name__}: {exc}") from exc

    def read_metadata(self, group, where):
        sub = self.child(group, "metadata", where)
        if sub is None:
            return {}
        import h5py
        if not isinstance(sub, h5py.Group):
            raise self.fail(f"{where}/metadata", "must be a group")
        out: dict = {}
        self._read_metadata_group(sub, f"{where}/metadata", "", out, 0)
        return out

    def _read_metadata_group(self, sub, where, prefix, out, depth):
        """Flat str -> value; NIR allows nested dicts, read as 'outer.inner' keys."""
        import h5py
        if depth > MAX_DEPTH:
            raise self.fail(where, f"metadata nested deeper than {MAX_DEPTH} levels")
        for k in self.keys(sub, where):
            obj = self.child(sub, k, where)
            if isinstance(obj, h5py.Group):
                self._read_metadata_group(obj, f"{where}/{k}", f"{prefix}{k}.", out, depth + 1)
            elif obj.dtype.kind in "OS":
                out[prefix + k] = self.read_string(obj, f"{where}/{k}")
            else:
                v = self.read_dataset(obj, f"{where}/{k}", None)
                out[prefix + k] = v.item() if v.ndim == 0 else v

    def read_node(self, group, where):
        t = self.child(group, "type", where)
        if t is None:
            raise self.fail(where, "node has no 'type'")
        type_name = self.read_string(t, f"{where}/type")
        cls = KINDS.get(type_name)
        if cls is None:
            raise self.fail(where, f"unknown node kind {type_name!r}; known kinds are "
                            f"{sorted(KINDS)} (a newer polyir may know it)")
        if cls is Graph:
            return self.read_graph(group, where)
        kwargs = self._record_kwargs(group, cls, where)
        inferred = self.read_inferred(group, cls, where)
        metadata = self.read_metadata(group, where)
        try:  # NIR files that to_nir made carry the marker as metadata
            more, metadata = inferred_fields(cls, metadata, where)
        except GraphError as exc:
            raise self.fail(f"{where}/metadata", exc.reason) from None
        for name in inferred + more:
            kwargs[name] = None
        return self.build(cls, dict(kwargs, metadata=metadata), where)

    def read_inferred(self, group, cls, where) -> list[str]:
        """Names in the node's INFERRED_ATTR: optional fields written only for NIR readers."""
        import h5py
        try:
            if INFERRED_ATTR not in group.attrs:
                return []
            aid = group.attrs.get_id(INFERRED_ATTR)
            shape, dtype = aid.shape, aid.dtype
        except Exception as exc:
            raise self.fail(where, f"unreadable attributes: {exc}") from None
        optional = [n for n, spec in specs(cls) if isinstance(spec, Optional)]
        if (shape is None or len(shape) != 1 or shape[0] > len(optional)
                or h5py.check_string_dtype(dtype) is None):
            raise self.fail(f"{where}@{INFERRED_ATTR}", f"must list at most {len(optional)} "
                            f"field names, found {dtype} {shape}")
        try:
            names = [v.decode("utf8") if isinstance(v, bytes) else str(v)
                     for v in group.attrs[INFERRED_ATTR]]
        except Exception as exc:
            raise self.fail(f"{where}@{INFERRED_ATTR}", f"cannot be read: {exc}") from None
        for n in names:
            if n not in optional:
                raise self.fail(f"{where}@{INFERRED_ATTR}", f"{n!r} is not an optional field of "
                                f"{cls.__name__} (those are {optional})")
        return names

    def _record_kwargs(self, group, cls, where):
        present = set(self.keys(group, where)) - {"type", "metadata"}
        kwargs = {}
        declared = {f.name: f for f in fields(cls)}
        for name, spec in specs(cls):
            if name not in present:
                f = declared[name]
                if f.default is MISSING and f.default_factory is MISSING:
                    if not isinstance(spec, Optional):
                        raise self.fail(where, f"{cls.__name__} needs field {name!r}, which is "
                                        "missing")
                    kwargs[name] = None
                continue
            present.discard(name)
            kwargs[name] = self.read_value(self.child(group, name, where), spec, f"{where}/{name}")
        if present:
            raise self.fail(where, f"unexpected field(s) {sorted(present)} for {cls.__name__}; "
                            f"it has {[n for n, _ in specs(cls)]}")
        return kwargs

    def read_graph(self, group, where):
        if where.count("/nodes/") >= MAX_DEPTH:
            raise self.fail(where, f"graphs nested deeper than {MAX_DEPTH} levels")
        allowed = {"type", "nodes", "edges", "edge_ports", "metadata"}
        extra = set(self.keys(group, where)) - allowed
        if extra:
            raise self.fail(where, f"unexpected entries {sorted(extra)} in a graph")
        nodes_group = self.child(group, "nodes", where, True)
        if nodes_group is None:
            raise self.fail(where, "graph has no 'nodes' group")
        g = Graph(metadata=self.read_metadata(group, where))
        for name in self.keys(nodes_group, f"{where}/nodes"):
            sub = self.child(nodes_group, name, f"{where}/nodes", True)
            g.nodes[name] = self.read_node(sub, f"{where}/nodes/{name}")
        edges_ds = self.child(group, "edges", where, False)
        if edges_ds is None:
            raise self.fail(where, "graph has no 'edges' dataset")
        if edges_ds.shape == (0,):
            edges = np.zeros((0, 2), dtype=object)
        else:
            edges = self.read_strings(edges_ds, f"{where}/edges", 2)
            if edges.shape[1] != 2:
                raise self.fail(f"{where}/edges", f"must be (E, 2), found {edges.shape}")
        ports_ds = self.child(group, "edge_ports", where, False)
        ports = (self.read_strings(ports_ds, f"{where}/edge_ports", 1) if ports_ds is not None
                 else ["input"] * len(edges))
        if len(ports) != len(edges):
            raise self.fail(f"{where}/edge_ports", f"has {len(ports)} entries for {len(edges)} edges")
        for (src, dst), p in zip(edges, ports):
            g.connect(src, dst, p)
        return g


def _repair_outputs(graph: Graph, where: str, reader: _Reader):
    """Old NIR writers (Rockpool) stored an Output shape that disagrees with what feeds it but
    holds as many elements; adopt the fed shape, loudly."""
    types = graph.infer_types(strict=False)
    for name, node in list(graph.nodes.items()):
        if isinstance(node, Graph):
            _repair_outputs(node, f"{where}/nodes/{name}", reader)
            continue
        if not isinstance(node, Output):
            continue
        srcs = [e[0] for e in graph.predecessors(name) if e[0] in types]
        if not srcs:
            continue
        fed = types[srcs[0]].shape
        if fed != node.shape and int(np.prod(fed)) == int(np.prod(node.shape)):
            if reader.strict:
                raise reader.fail(f"{where}/nodes/{name}", f"Output shape {node.shape} does not "
                                  f"match the {fed} that feeds it (load with strict=False to adopt it)")
            warnings.warn(f"{reader.path}: Output {name!r} declares shape {node.shape} but is fed "
                          f"{fed}; using {fed} (same number of elements; written by an older NIR "
                          "tool). Pass strict=True to refuse such files.", PolyirWarning,
                          stacklevel=4)
            graph.nodes[name] = Output(fed, metadata=node.metadata)


def _check_format(reader: _Reader, f):
    meta = reader.child(f, "polyir", "/", True)
    if meta is None:
        return "0"  # a plain NIR file
    fmt = reader.child(meta, "format", "/polyir", False)
    if fmt is None:
        raise reader.fail("/polyir", "has no 'format' version")
    version = reader.read_string(fmt, "/polyir/format")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise reader.fail("/polyir/format", f"is not a version: {version!r}") from None
    ours = int(FORMAT_VERSION.split(".")[0])
    if major > ours:
        raise reader.fail("/polyir/format", f"file format {version} is newer than this polyir "
                          f"reads ({FORMAT_VERSION}); upgrade polyir")
    return version


def load(path, *, strict: bool = False, max_array_bytes: int = MAX_ARRAY_BYTES,
         max_total_bytes: int = MAX_TOTAL_BYTES, convention: str | None = None,
         timeout: float | str | None = "auto") -> Graph:
    """Read and check a polyir or NIR `.h5`/`.nir` file. Raises FormatError for anything
    malformed. `strict=True` also refuses inconsistent Output shapes that older NIR writers left
    (by default they are adopted with a PolyirWarning). `convention` reads a NIR file as the
    named spiking library wrote it (see polyir.ir.conventions).

    The loader reads only this file (links, external and virtual storage and unlisted filters
    are refused before any read) and is bounded: on POSIX systems the file is first parsed in a
    child process that is killed after `timeout` seconds (default "auto": LOAD_TIMEOUT plus
    LOAD_TIMEOUT_PER_MB per MB of file) and may use LOAD_MEMORY bytes plus LOAD_MEMORY_PER_BYTE
    per byte of the file; only a file the child parsed is read here.
    `timeout=None` parses in this process only (a corrupted file can then hang the caller)."""
    path = os.fspath(path)
    if convention is not None:
        convention_entry(convention)
    if not os.path.isfile(path):
        raise FormatError("no such file" if not os.path.exists(path) else "not a regular file",
                          path=path)
    reader = _Reader(path, max_array_bytes, max_total_bytes, strict)
    if timeout == "auto":
        timeout = LOAD_TIMEOUT + LOAD_TIMEOUT_PER_MB * (reader.file_size or 0) / 1e6
    if timeout is not None and hasattr(os, "fork") and sys.platform.startswith("linux"):
        _parse_isolated(path, _Reader(path, max_array_bytes, max_total_bytes, strict, probe=True),
                        float(timeout))
    graph = _parse(path, reader)
    try:
        graph = apply_convention(graph, convention)
        _repair_outputs(graph, "/node", reader)
        graph.check()
    except FormatError:
        raise
    except GraphError as exc:
        raise FormatError(f"the graph is invalid: {exc}", path=path) from exc
    except Exception as exc:  # shape arithmetic on hostile values, etc.
        raise FormatError(f"the graph is invalid: {type(exc).__name__}: {exc}", path=path) from exc
    return graph


def _parse(path, reader: _Reader) -> Graph:
    """The file's graph, unchecked: every HDF5 read of a load happens here."""
    import h5py
    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise FormatError(f"not a readable HDF5 file ({exc}); it may be truncated or another "
                          "format", path=path) from None
    try:
        with f:
            _check_format(reader, f)
            root = reader.child(f, "node", "/", True)
            if root is None:
                raise reader.fail("/", "has no 'node' group: not a NIR/polyir file")
            graph = reader.read_node(root, "/node")
            if not isinstance(graph, Graph) and not reader.probe:
                raise reader.fail("/node", f"the root node must be a graph, found "
                                  f"{graph.kind_name}")
    except FormatError:
        raise
    except Exception as exc:  # h5py/HDF5 errors on damaged files, recursion on hostile nesting
        raise FormatError(f"cannot be read ({type(exc).__name__}: {exc})", path=path) from None
    return graph


def _parse_isolated(path, reader: _Reader, timeout: float) -> None:
    """Parse the file in a forked child bounded in time and memory; raise the FormatError it
    found, or one saying that it hung, crashed or ran out of memory.

    A corrupted file can make the HDF5 library loop or allocate gigabytes inside one C call,
    which no Python code can interrupt; a child process can be killed. Forking costs a few
    milliseconds; the child walks the file without decompressing chunked arrays or building
    nodes (_Reader's probe), then this process reads it: see docs/security.md."""
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
            _limit_memory(budget)
            try:
                _parse(path, reader)
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


def _limit_memory(extra: int) -> None:
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
