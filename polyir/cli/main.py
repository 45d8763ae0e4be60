"""The entry point of the `polyir` command: builds the parser from the registered subcommands and
turns polyir's errors into a message and exit status 1."""
from __future__ import annotations

import argparse
import json
import sys

from ..ir import PolyirError
from ..ir.h5 import FORMAT_VERSION
# importing a command module registers its subcommands, in this order in `polyir -h`
from . import graph_commands  # noqa: F401  isort: skip
from . import backend_commands  # noqa: F401  isort: skip
from . import draw  # noqa: F401  isort: skip
from . import demo  # noqa: F401  isort: skip
from .registry import COMMANDS
from .tables import printable

DESCRIPTION = ("polyir: inspect, check, convert, run, compare and benchmark polyir graph files. "
               "Every command takes -h; most print tables and take --json for machine-readable "
               "output; a failure exits with status 1.")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    parser = argparse.ArgumentParser(prog="polyir", description=DESCRIPTION)
    parser.add_argument("--version", action="version",
                        version=f"polyir {__version__} (file format {FORMAT_VERSION})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (fn, add_args, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(handler=fn)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (PolyirError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        name = type(exc).__name__ if isinstance(exc, PolyirError) else "error"
        if getattr(args, "json", False):  # machines get the failure as JSON too
            print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)},
                             indent=2))
        print(printable(f"{name}: {exc}", newlines=True), file=sys.stderr)
        return 1
