"""The subcommand registry of the `polyir` command: `@command(name, help)` registers a handler
`fn(args) -> exit code`, `@arguments(adder)` attaches the function that adds its options."""
from __future__ import annotations

from typing import Callable

#: name -> (handler, adds its options to an argparse parser, one-line help)
COMMANDS: dict[str, tuple[Callable, Callable, str]] = {}


def command(name: str, help: str):
    """Register `fn(args) -> int` as a subcommand; `fn.arguments(parser)` adds its options."""

    def register(fn):
        COMMANDS[name] = (fn, getattr(fn, "arguments", lambda p: None), help)
        return fn

    return register


def arguments(adder: Callable):
    """Attach `adder(parser)`, which adds a subcommand's options (apply below @command)."""
    def attach(fn):
        fn.arguments = adder
        return fn
    return attach


def file_arg(p) -> None:
    """The FILE argument and --json flag that most subcommands share."""
    p.add_argument("file", help="a polyir .h5 or NIR .nir file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
