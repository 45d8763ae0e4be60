"""What the reader checks about a dataset before reading any byte of it: that its bytes lie in
this file (no external or virtual storage, every chunk inside the file), that it needs no filter
outside the allow-list, and that its declared size is within the limits and plausible for what
the file stores."""
from __future__ import annotations

import os

import numpy as np

from ..errors import FormatError

#: default cap on one array's declared size, and on the sum over the file (override in load()).
MAX_ARRAY_BYTES = 2 << 30
MAX_TOTAL_BYTES = 8 << 30
#: a compressed dataset may declare at most this many times the bytes it stores (gzip cannot
#: exceed ~1032:1): more is a decompression bomb or a dataset whose data was never written.
MAX_EXPANSION = 2048
#: a fixed-length string may declare at most this many bytes (more is refused before reading).
MAX_STRING_BYTES = 1 << 20
#: HDF5 filters a dataset may use: those built into HDF5 that polyir and NIR write. Anything
#: else is refused before reading (so no filter plugin is ever looked up or loaded).
ALLOWED_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32"}


class DatasetChecks:
    """The reader's checks before any read (mixed into read.Reader, which provides `fail`,
    `source`, `max_array`, `max_total`, `total` and `file_size`)."""

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

    def chunks(self, ds, where) -> list:
        """A chunked dataset's index (h5py StoreInfo: where HDF5 would find each chunk), each
        chunk checked to lie inside the file; decompressing allowed filters is bounded by
        itself."""
        out = []
        try:
            if hasattr(ds.id, "chunk_iter"):
                ds.id.chunk_iter(out.append)
            else:  # older HDF5: one lookup per chunk
                out = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
        except Exception as exc:
            raise self.fail(where, f"unreadable chunk index: {exc}") from None
        end = self.file_size if self.file_size is not None else float("inf")
        if any(info.byte_offset is None or info.byte_offset + info.size > end for info in out):
            raise self.fail(where, "has a chunk outside the file: truncated or forged")
        return out

    def check_string_size(self, ds, where):
        """Refuse strings that declare more than MAX_STRING_BYTES each, before reading them: a
        fixed-length type by its size, variable-length strings by the length each one's heap
        reference declares (HDF5 allocates that length, up to 4 GiB, before it reads the heap)."""
        if ds.dtype.kind == "S" and ds.dtype.itemsize > MAX_STRING_BYTES:
            raise self.fail(where, f"declares strings of {ds.dtype.itemsize:,} bytes each, over "
                            f"the limit of {MAX_STRING_BYTES:,}")
        if ds.dtype.kind == "O":
            longest = max((int(n.max()) for n in self.vlen_lengths(ds, where) if n.size),
                          default=0)
            if longest > MAX_STRING_BYTES:
                raise self.fail(where, f"declares a string of {longest:,} bytes, over the limit "
                                f"of {MAX_STRING_BYTES:,}: a corrupted length")

    def vlen_lengths(self, ds, where):
        """The declared length of each variable-length string of `ds`, read raw from the file:
        a heap reference is the length (4 bytes, little-endian), the heap's address and an
        index. Contiguous storage is read at its offset, unfiltered chunks as stored. Compact
        storage and string attributes keep their references in an object header, and filtered
        chunks (HDF5 2 no longer writes them) would need undoing: h5py reads neither raw, so
        there the probe's memory cap bounds a corrupted length."""
        from h5py import h5d
        try:
            dcpl = ds.id.get_create_plist()
            layout = dcpl.get_layout()
            ref = 8 + ds.file.id.get_create_plist().get_sizes()[0]
            spans = []
            if layout == h5d.CONTIGUOUS and ds.id.get_offset() is not None:
                spans.append((ds.id.get_offset(), ds.id.get_storage_size()))
            elif layout == h5d.CHUNKED:
                every_filter = (1 << dcpl.get_nfilters()) - 1
                spans += [(info.byte_offset, info.size) for info in self.chunks(ds, where)
                          if info.filter_mask & every_filter == every_filter]
            raws = [os.pread(self.source.fd, size, offset) for offset, size in spans]
        except FormatError:
            raise
        except Exception as exc:
            raise self.fail(where, f"unreadable string references: {exc}") from None
        record = np.dtype([("length", "<u4"), ("heap", f"V{ref - 4}")])
        return [np.frombuffer(raw[:len(raw) // ref * ref], record)["length"] for raw in raws]
