"""The `polyir` command (also `python -m polyir.cli`).

main.py is the entry point; registry.py holds the subcommand registry; tables.py prints tables and
JSON; graph_commands.py, backend_commands.py, draw.py and demo.py (with demo_steps.py) each
register their subcommands. The CLI sits on top of every other polyir package and nothing in
polyir imports it.
"""
from .main import build_parser, main
from .registry import COMMANDS

__all__ = ["main", "build_parser", "COMMANDS"]
