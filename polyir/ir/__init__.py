"""The typed graph IR: node kinds, Graph, types, validation, .h5 read/write. Imports nothing else
of polyir."""
from .errors import FormatError, GraphError, PolyirError, PolyirWarning
from .graph import Graph
from .kinds import *  # noqa: F401,F403
from .kinds import __all__ as _kinds_all
from .types import Port, port

__all__ = ["FormatError", "GraphError", "PolyirError", "PolyirWarning", "Graph", "Port", "port",
           *_kinds_all]
