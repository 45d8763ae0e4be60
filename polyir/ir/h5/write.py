"""The .h5 writer: save() validates a graph and writes it atomically (temporary file, fsync,
rename), every node's fields by the kinds' specs (see layout.py for the layout).

Arrays keep their dtype; arrays of 4 KiB and more are chunked, and gzip-compressed (with byte
shuffle) unless a sample shows a large float array would shrink by less than 15%.
"""
from __future__ import annotations

import os
import re
import zlib
from dataclasses import fields

import numpy as np

from .. import tempfiles
from ..errors import GraphError
from ..fields import Ints, NamedArrays, Optional, Records, Spec, Strs, specs
from ..graph import Graph, edge_port
from .layout import FORMAT_VERSION, INFERRED_ATTR, NIR_LAYOUT_VERSION

#: small arrays are stored plain; larger ones chunked and compressed.
COMPRESS_MIN_BYTES = 1 << 12
#: float arrays from this size on are compressed only when a sample shows that it pays.
SAMPLE_COMPRESSION_BYTES = 1 << 18


def _producer() -> str:
    try:
        from importlib.metadata import version
        return f"polyir {version('polyir')}"
    except Exception:  # running from a source tree
        return "polyir"



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
