"""The .h5 reader: load() opens the file once, has the bounded child (probe.py) walk it, then
reads it here by the kinds' field specs, the closed kind registry and a dtype allow-list, and
checks the graph (see layout.py for the layout).

The reader executes nothing and imports nothing by name; it checks links, kinds, field names,
dtypes, shapes and byte sizes before reading any array (checks.py), and raises FormatError for
any malformed input.
"""
from __future__ import annotations

import os
import stat
import warnings
from dataclasses import MISSING, fields

import numpy as np

from ..conventions import apply_convention, convention_entry
from ..errors import FormatError, GraphError, PolyirWarning
from ..fields import Array, Ints, NamedArrays, Optional, Records, Scalar, Spec, Strs, specs
from ..graph import Graph
from ..kinds.base import KINDS, inferred_fields
from ..kinds.nir import Output
from . import probe
from .checks import MAX_ARRAY_BYTES, MAX_TOTAL_BYTES, DatasetChecks
from .layout import FORMAT_VERSION, INFERRED_ATTR

#: nesting depth of graphs the reader accepts.
MAX_DEPTH = 32
#: a file may be this much larger than the arrays it may hold (max_total_bytes): HDF5's headers,
#: strings and free space.
SLACK_BYTES = 64 << 20

_FAMILY_DTYPES = {
    "real": "f",      # float16/32/64 (checked by itemsize below)
    "int": "iu",
    "gate": "iu",
    "bool": "biu",
}


class OpenFile:
    """The bytes a load reads, taken from the path once. On Linux the file is copied into an
    anonymous in-memory file (memfd) that only this process and its probe child hold, so the
    child walks exactly the bytes this process then reads: a file rewritten or replaced after
    the probe cannot escape it. Elsewhere (no memfd, and no probe) the path is read directly.
    Nothing is written: the file object reads with os.pread."""

    def __init__(self, path: str, max_bytes: int):
        self.path = path
        if not os.path.isfile(path):
            raise FormatError("no such file" if not os.path.exists(path) else
                              "not a regular file", path=path)
        try:  # O_NONBLOCK: a FIFO swapped in for the file cannot block the open
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise FormatError(f"cannot be opened: {exc.strerror}", path=path) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FormatError("not a regular file", path=path)
            if st.st_size > max_bytes:
                raise FormatError(f"the file has {st.st_size:,} bytes, more than its arrays may "
                                  f"hold ({max_bytes:,}); pass max_total_bytes= to load() if it "
                                  "is genuine", path=path)
            self.fd, self.in_memory = fd, hasattr(os, "memfd_create")
            if self.in_memory:
                self.fd = _copy_to_memory(fd, os.path.basename(path))
                os.close(fd)
            self.size = os.fstat(self.fd).st_size
        except BaseException:
            os.close(fd)
            raise

    def open_h5(self):
        """An h5py.File reading these bytes (HDF5 cannot open a memfd by name)."""
        import h5py
        return h5py.File(_PositionalFile(self.fd) if self.in_memory else self.path, "r")

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _PositionalFile:
    """A read-only file object over a descriptor that keeps its own position (os.pread), so
    the probe child and this process never move each other's offset."""

    def __init__(self, fd: int):
        self.fd, self.pos = fd, 0

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos}.get(whence)
        self.pos = (os.fstat(self.fd).st_size if base is None else base) + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf) -> int:
        data = os.pread(self.fd, len(buf), self.pos)
        buf[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = max(os.fstat(self.fd).st_size - self.pos, 0)
        data = os.pread(self.fd, size, self.pos)
        self.pos += len(data)
        return data


def _copy_to_memory(fd: int, name: str) -> int:
    """A memfd holding the bytes of the open file `fd` (copied in the kernel where it can)."""
    memfd = os.memfd_create(f"polyir-load:{name}"[:240], getattr(os, "MFD_CLOEXEC", 1))
    try:
        try:
            while os.sendfile(memfd, fd, None, 1 << 30):
                pass
        except OSError:  # a file system without sendfile: copy through this process
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(memfd, 0)
            os.lseek(memfd, 0, os.SEEK_SET)
            while chunk := os.read(fd, 1 << 20):
                os.write(memfd, chunk)
        return memfd
    except BaseException:
        os.close(memfd)
        raise


class Reader(DatasetChecks):
    """Reads an open file by the kinds' field specs. With `probe`, it walks the file as a load
    would (every object header, link, string and contiguous array, the index of every chunked
    array) without decompressing chunked arrays or building nodes: what the bounded child
    process runs before the real read (see probe.py)."""

    def __init__(self, source: OpenFile, max_array_bytes, max_total_bytes, strict, probe=False):
        self.probe = probe
        self.source = source
        self.path = source.path
        self.max_array = max_array_bytes
        self.max_total = max_total_bytes
        self.total = 0
        self.strict = strict
        self.file_size = source.size

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
            self.chunks(ds, where)
            return np.zeros((), dtype)
        try:
            return np.asarray(ds[()])
        except FormatError:
            raise
        except Exception as exc:
            raise self.fail(where, f"cannot be read ({type(exc).__name__}: {exc}); the file may "
                            "be truncated or use an unavailable filter") from None


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



    def read_strings(self, ds, where, ndim) -> np.ndarray:
        import h5py
        if not isinstance(ds, h5py.Dataset):
            raise self.fail(where, "must be a string dataset, found a group")
        if ds.dtype.kind not in "OS" or (ds.dtype.kind == "O"
                                          and h5py.check_string_dtype(ds.dtype) is None):
            raise self.fail(where, f"must hold strings, found {ds.dtype}")
        if ds.shape is None or len(ds.shape) != ndim:
            raise self.fail(where, f"must be {ndim}-D, found shape {ds.shape}")
        self.check_size(ds, ds.shape, 16 if ds.dtype.kind == "O" else ds.dtype.itemsize, where)
        self.check_string_size(ds, where)
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


def _repair_outputs(graph: Graph, where: str, reader: Reader):
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


def _check_format(reader: Reader, f):
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
    are refused before any read), takes its bytes once (the probe and the read see the same
    bytes, see OpenFile) and is bounded: on Linux the file is first parsed in a child process
    that is killed after `timeout` seconds (default "auto": LOAD_TIMEOUT plus
    LOAD_TIMEOUT_PER_MB per MB of file) and may use LOAD_MEMORY bytes plus LOAD_MEMORY_PER_BYTE
    per byte of the file; only bytes the child parsed are read here. `timeout=None` parses in
    this process only (a corrupted file can then hang the caller)."""
    path = os.fspath(path)
    if convention is not None:
        convention_entry(convention)
    with OpenFile(path, max_total_bytes + SLACK_BYTES) as source:
        if timeout == "auto":
            timeout = probe.LOAD_TIMEOUT + probe.LOAD_TIMEOUT_PER_MB * source.size / 1e6
        if timeout is not None and probe.AVAILABLE:
            probe.parse_isolated(Reader(source, max_array_bytes, max_total_bytes, strict,
                                        probe=True), float(timeout), parse)
        reader = Reader(source, max_array_bytes, max_total_bytes, strict)
        graph = parse(reader)
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


def parse(reader: Reader) -> Graph:
    """The graph of the reader's open file, unchecked: every HDF5 read of a load happens here
    (in the probe child and in this process)."""
    import h5py
    path = reader.path
    try:
        f = reader.source.open_h5()
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
