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


def json_arg(p) -> None:
    """The --json flag of every subcommand that reports something."""
    p.add_argument("--json", action="store_true", help="machine-readable output")


def file_arg(p) -> None:
    """The FILE argument and --json flag that most subcommands share."""
    p.add_argument("file", help="a polyir .h5 or NIR .nir file")
    json_arg(p)


def in_out_args(input_help: str, output_help: str):
    """An adder for subcommands that read INPUT and write OUTPUT (convert, optimize)."""
    def add(p) -> None:
        p.add_argument("input", help=input_help)
        p.add_argument("output", help=output_help)
        json_arg(p)
    return add
