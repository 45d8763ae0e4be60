"""The two errors polyir raises for bad input: a bad graph, and a bad file."""


class PolyirError(Exception):
    """Base of every error polyir raises on purpose."""


class GraphError(PolyirError, ValueError):
    """A graph or node breaks an invariant of the IR.

    Carries the node's name, the offending field and how to fix it, so that an error in a graph of
    hundreds of nodes points at one place.
    """

    def __init__(self, message: str, *, node: str | None = None, field: str | None = None,
                 fix: str | None = None):
        self.node, self.field, self.fix, self.reason = node, field, fix, message
        where = []
        if node is not None:
            where.append(f"node {node!r}")
        if field is not None:
            where.append(f"field {field!r}")
        text = (", ".join(where) + ": " if where else "") + message
        if fix:
            text += f" (fix: {fix})"
        super().__init__(text)


class FormatError(PolyirError, ValueError):
    """A file is not a valid polyir/NIR file: says where in the file and what is wrong."""

    def __init__(self, message: str, *, path: str | None = None, where: str | None = None):
        self.path, self.where, self.reason = path, where, message
        prefix = ""
        if path is not None:
            prefix += f"{path}: "
        if where is not None:
            prefix += f"at {where}: "
        super().__init__(prefix + message)


class PolyirWarning(UserWarning):
    """Something was accepted but adjusted (e.g. an inconsistent shape in an old NIR file)."""
