"""The .h5 file, NIR's HDF5 layout extended: `save` and `load`, both driven by the kinds' field
specs, the closed kind registry and a dtype allow-list.

layout.py: the layout and its versions; write.py: the writer; read.py: the reader (load);
checks.py: what is checked about a dataset before any byte of it is read; probe.py: the
bounded child process that walks a file before the reader reads it.
"""
from .checks import (ALLOWED_FILTERS, MAX_ARRAY_BYTES, MAX_EXPANSION, MAX_STRING_BYTES,
                     MAX_TOTAL_BYTES)
from .layout import FORMAT_VERSION, INFERRED_ATTR, NIR_LAYOUT_VERSION
from .probe import LOAD_MEMORY, LOAD_MEMORY_PER_BYTE, LOAD_TIMEOUT, LOAD_TIMEOUT_PER_MB
from .read import MAX_DEPTH, load
from .write import save

__all__ = ["save", "load", "FORMAT_VERSION", "NIR_LAYOUT_VERSION", "INFERRED_ATTR",
           "MAX_ARRAY_BYTES", "MAX_TOTAL_BYTES", "MAX_DEPTH", "MAX_EXPANSION", "MAX_STRING_BYTES",
           "ALLOWED_FILTERS", "LOAD_TIMEOUT", "LOAD_TIMEOUT_PER_MB", "LOAD_MEMORY",
           "LOAD_MEMORY_PER_BYTE"]
