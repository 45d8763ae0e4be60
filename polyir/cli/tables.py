"""How the `polyir` command prints: rich tables for people, JSON for machines (`--json`), and the
node table and kind-coverage table that several subcommands show."""
from __future__ import annotations

import json
import unicodedata
from typing import Callable

import numpy as np

from ..ir import KINDS, Graph


def console():
    from rich.console import Console
    return Console(emoji=False)


def printable(text, newlines: bool = False) -> str:
    """`text` with every control or invisible format character (ANSI escapes, CR, backspace,
    bidi overrides; newlines too unless `newlines`) shown as a Python escape: names from a file
    cannot move the cursor, recolour or overwrite the terminal."""
    out = []
    for ch in str(text):
        if ch == "\n" and newlines or ch == "\t":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def markup_safe(text) -> str:
    """`text` for a rich table or console: printable, and rich markup shown literally."""
    from rich.markup import escape
    return escape(printable(text))


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def to_json(data) -> str:
    return json.dumps(data, indent=2, default=_json_default)


def emit(args, data, render: Callable[[], None]) -> None:
    """Print `data` as JSON when the command was given --json, else call `render()`."""
    if getattr(args, "json", False):
        print(to_json(data))
    else:
        render()


def file_format(path) -> str | None:
    """The file's format version ('1.0.0', or 'nir 0.5' for a NIR file), None if unreadable."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            if "polyir" in f and "format" in f["polyir"]:
                v = f["polyir/format"][()]
                return v.decode() if isinstance(v, bytes) else str(v)
            if "version" in f:
                v = f["version"][()]
                return "nir " + (v.decode() if isinstance(v, bytes) else str(v))
    except Exception:
        return None
    return None


def graph_table(graph: Graph) -> list[dict]:
    """One row per node: name, kind, input edges, output type, parameter count."""
    types = graph.infer_types(strict=False)
    rows = []
    for name, node in graph.nodes.items():
        rows.append({"node": name, "kind": node.kind_name,
                     "inputs": [e[0] + (f"->{e[2]}" if len(e) > 2 else "")
                                for e in graph.predecessors(name)],
                     "output": str(types.get(name, "?")),
                     "parameters": node.parameter_count()})
    return rows


def print_graph(graph: Graph, title: str = "") -> None:
    from rich.table import Table
    table = Table(title=markup_safe(title) if title else None)
    for col in ("node", "kind", "inputs", "output", "parameters"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for r in graph_table(graph):
        table.add_row(markup_safe(r["node"]), r["kind"], markup_safe(", ".join(r["inputs"])),
                      markup_safe(r["output"]), f"{r['parameters']:,}")
    console().print(table)


def coverage() -> dict[str, list[str]]:
    """kind -> directions that have a rule for it (imports every direction that is installed)."""
    import importlib
    from ..ir.walk import TABLES
    for mod in ("importers.torch", "importers.heyoka", "importers.nir", "exporters.nir",
                "backends.lower"):
        try:
            importlib.import_module(f"polyir.{mod}")
        except ImportError:
            pass
    return {name: sorted(d for d, t in TABLES.items() if cls in t) for name, cls in KINDS.items()}


def print_coverage() -> None:
    from rich.table import Table

    from ..ir.walk import TABLES
    cov = coverage()
    directions = sorted(TABLES)
    table = Table(title="kind coverage")
    table.add_column("kind")
    for d in directions:
        table.add_column(d)
    for k, ds in cov.items():
        table.add_row(k, *("yes" if d in ds else "-" for d in directions))
    console().print(table)
