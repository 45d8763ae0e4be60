"""The .h5 layout (NIR's HDF5 layout, extended) and its version numbers, shared by the writer
and the reader.

Root `version` (NIR layout version) and `node` (the graph: `type` = "NIRGraph", `nodes/`,
`edges` (E, 2) strings, optional `edge_ports` (E,) strings, optional `metadata/`); each node is a
group with a `type` string and one dataset per field (records and named weights are subgroups).
polyir adds a root group `polyir` with `format` (semver of this layout) and `producer`.
"""
from ..kinds.base import INFERRED_KEY

#: 1.1.0: Conv1d / Conv2d store zero padding per side (`padding_end`, omitted when symmetric)
#: and never the strings 'same' / 'valid'; 1.0 files migrate when their nodes are built
#: (a string is resolved by the kind, torch's 'same').
FORMAT_VERSION = "1.1.0"
NIR_LAYOUT_VERSION = "1.0.8"
#: node attribute listing fields written only for NIR readers (values polyir infers): the reader
#: gives them back as None, so the graph round-trips unchanged.
INFERRED_ATTR = INFERRED_KEY
