"""The `polyir` command. Every subcommand takes -h, prints human tables (rich), and `--json` for
machines where it reports something; failures exit non-zero with the error's message."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

import numpy as np

from .ir import KINDS, FormatError, Graph, PolyirError
from .ir.h5 import FORMAT_VERSION, load, save

COMMANDS: dict[str, tuple[Callable, Callable, str]] = {}


def command(name: str, help: str):
    """Register `fn(args) -> int` as a subcommand; `fn.arguments(parser)` adds its options."""

    def register(fn):
        COMMANDS[name] = (fn, getattr(fn, "arguments", lambda p: None), help)
        return fn

    return register


def arguments(adder):
    def attach(fn):
        fn.arguments = adder
        return fn
    return attach


def _console():
    from rich.console import Console
    return Console()


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _emit(args, data, render: Callable[[], None]):
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=_json_default))
    else:
        render()


def _file_format(path) -> str | None:
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
    types = graph.infer_types(strict=False)
    rows = []
    for name, node in graph.nodes.items():
        rows.append({"node": name, "kind": node.kind_name,
                     "inputs": [e[0] + (f"->{e[2]}" if len(e) > 2 else "")
                                for e in graph.predecessors(name)],
                     "output": str(types.get(name, "?")),
                     "parameters": node.parameter_count()})
    return rows


def print_graph(graph: Graph, title: str = ""):
    from rich.table import Table
    table = Table(title=title or None)
    for col in ("node", "kind", "inputs", "output", "parameters"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for r in graph_table(graph):
        table.add_row(r["node"], r["kind"], ", ".join(r["inputs"]), r["output"],
                      f"{r['parameters']:,}")
    _console().print(table)


def _file_arg(p):
    p.add_argument("file", help="a polyir .h5 or NIR .nir file")
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("info", "table of nodes, kinds, shapes and parameter counts")
@arguments(lambda p: (_file_arg(p), p.add_argument("--kinds", action="store_true",
                                                   help="also print which directions cover each kind")))
def cmd_info(args) -> int:
    g = load(args.file)
    data = {"file": args.file, "format": _file_format(args.file), "nodes": graph_table(g),
            "edges": [list(e) for e in g.edges], "metadata": g.metadata,
            "parameters": g.parameter_count()}
    if args.kinds:
        data["coverage"] = coverage()
    from .ir.rules_text import describe
    texts = {n: t for n, k in g.flattened().nodes.items() if (t := describe(k)) is not None}
    if texts:
        data["rules"] = texts

    def render():
        print_graph(g, f"{args.file}  (format {data['format']}, {data['parameters']:,} parameters)")
        if g.metadata:
            _console().print("metadata:", g.metadata)
        for n, text in texts.items():  # RuleSet nodes: their rules in text form
            print(f"rules of {n!r}:\n{text}")
        if args.kinds:
            print_coverage()
    _emit(args, data, render)
    return 0


def coverage() -> dict[str, list[str]]:
    """kind -> directions that have a rule for it (imports every direction that is installed)."""
    import importlib
    from .ir.walk import TABLES
    for mod in ("importers.torch", "importers.heyoka", "importers.nir", "backends.lower"):
        try:
            importlib.import_module(f"polyir.{mod}")
        except Exception:
            pass
    return {name: sorted(d for d, t in TABLES.items() if cls in t) for name, cls in KINDS.items()}


def print_coverage():
    from rich.table import Table
    cov = coverage()
    from .ir.walk import TABLES
    directions = sorted(TABLES)
    table = Table(title="kind coverage")
    table.add_column("kind")
    for d in directions:
        table.add_column(d)
    for k, ds in cov.items():
        table.add_row(k, *("yes" if d in ds else "-" for d in directions))
    _console().print(table)


@command("check", "validate a file: exit 0, or print what is wrong and exit 1")
@arguments(_file_arg)
def cmd_check(args) -> int:
    try:
        g = load(args.file)
    except PolyirError as exc:
        _emit(args, {"file": args.file, "ok": False, "error": type(exc).__name__,
                     "message": str(exc)}, lambda: print(f"{type(exc).__name__}: {exc}",
                                                        file=sys.stderr))
        return 1
    _emit(args, {"file": args.file, "ok": True, "nodes": len(g.nodes), "edges": len(g.edges)},
          lambda: print(f"{args.file}: ok ({len(g.nodes)} nodes, {len(g.edges)} edges)"))
    return 0


@command("demo", "build, save, load and check a small graph of each family, then run the demos")
@arguments(lambda p: p.add_argument("--out", default=None, help="folder for the demo files"))
def cmd_demo(args) -> int:
    from . import demo
    return demo.main(args.out)


@command("heyoka", "print a graph as heyoka expressions (or, with --ode, as an ODE system)")
@arguments(lambda p: (_file_arg(p),
                      p.add_argument("--ode", action="store_true",
                                     help="leaky-integrator graph -> ODE system with spike events"),
                      p.add_argument("--mode", choices=("eval", "train"), default="eval",
                                     help="logic layers: hard gates (eval) or relaxed (train)"),
                      p.add_argument("--no-ffnn", action="store_true",
                                     help="build MLP chains node by node, not as heyoka ffnn")))
def cmd_heyoka(args) -> int:
    from .importers.heyoka import to_heyoka
    from .importers.heyoka_ode import to_heyoka_ode
    g = load(args.file)
    if args.ode:
        ode = to_heyoka_ode(g, mode=args.mode, ffnn=not args.no_ffnn)
        data = {"file": args.file, "equations": [[str(v), str(r)] for v, r in ode.sys],
                "outputs": [str(e) for e in ode.outputs], "inputs": ode.n_inputs,
                "spiking": [n.name for n in ode.spiking], "text": ode.describe()}
        _emit(args, data, lambda: print(ode.describe()))
        return 0
    exprs, variables = to_heyoka(g, mode=args.mode, ffnn=not args.no_ffnn)
    data = {"file": args.file, "inputs": [str(v) for v in variables],
            "outputs": [str(e) for e in exprs]}
    _emit(args, data, lambda: print(f"inputs: {', '.join(data['inputs'])}\n" + "\n".join(
        f"y[{k}] = {e}" for k, e in enumerate(data["outputs"]))))
    return 0


_CONVERT_FORMATS = {".h5": "polyir", ".nir": "nir"}


def _convert_format(path: str) -> str:
    import os
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in _CONVERT_FORMATS:
        raise FormatError(f"unknown extension {ext or '(none)'!r}: use .h5 (polyir) or .nir (NIR)",
                          path=str(path))
    return _CONVERT_FORMATS[ext]


@command("convert", "convert a graph between .h5 (polyir) and .nir (NIR), chosen by extension")
@arguments(lambda p: (p.add_argument("input", help="a .h5 or .nir file"),
                      p.add_argument("output", help="the .h5 or .nir file to write"),
                      p.add_argument("--json", action="store_true",
                                     help="machine-readable output")))
def cmd_convert(args) -> int:
    import os
    _convert_format(args.input)
    out_format = _convert_format(args.output)
    g = load(args.input)
    if out_format == "nir":
        import nir
        from .importers.nir import to_nir
        nir.write(args.output, to_nir(g))
    else:
        save(g, args.output)
    data = {"input": args.input, "output": args.output, "format": out_format,
            "nodes": len(g.nodes), "edges": len(g.edges), "bytes": os.path.getsize(args.output)}
    _emit(args, data, lambda: print(f"{args.input} -> {args.output} ({out_format}, "
                                    f"{data['nodes']} nodes, {data['bytes']:,} bytes)"))
    return 0


def _backend_command(fn_name):
    """Run polyir.backends.tools.<fn_name>(args) and print or emit its result."""
    def run(args) -> int:
        from .backends import tools
        code, data, lines = getattr(tools, fn_name)(args)
        _emit(args, data, lambda: print("\n".join(lines)))
        return code
    return run


def _codegen_args(p):
    _file_arg(p)
    p.add_argument("-o", "--output", default=None, help="the .c file to write (default: stdout)")
    p.add_argument("--word-bits", type=int, default=256, choices=(64, 128, 256, 512),
                   help="samples per machine word (default 256)")
    p.add_argument("--dt", type=float, default=None, help="time step for neurons (seconds)")


def _run_args(p):
    from .backends.tools import add_backend_options
    _file_arg(p)
    p.add_argument("--input", action="append", required=True,
                   help="a .npy file per graph Input (repeat for several), batch first")
    p.add_argument("--output", default=None, help="write the output to this .npy file")
    p.add_argument("--sequence", action="store_true",
                   help="inputs are (T, batch, ...) sequences (automatic for stateful graphs)")
    add_backend_options(p)


def _compare_args(p):
    from .backends.tools import add_backend_options
    _file_arg(p)
    add_backend_options(p, several=True)
    p.add_argument("--input", action="append", default=None, help=".npy inputs (default random)")
    p.add_argument("--batch", type=int, default=1000, help="random batch size (default 1000)")
    p.add_argument("--steps", type=int, default=20, help="time steps for stateful graphs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--rtol", type=float, default=1e-4)


def _bench_args(p):
    from .backends.tools import add_backend_options
    _file_arg(p)
    add_backend_options(p)
    p.add_argument("--batch", type=int, default=100_000)
    p.add_argument("--steps", type=int, default=100, help="time steps for stateful graphs")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)


command("codegen", "write the standalone C for a graph (entry points in its header comment)")(
    arguments(_codegen_args)(_backend_command("codegen")))
command("run", "run a graph on .npy inputs with a backend (c, torch, cuda, heyoka)")(
    arguments(_run_args)(_backend_command("run")))
command("compare", "run a graph on several backends; max abs error, mismatching bits; exit 1 "
                   "above tolerance")(arguments(_compare_args)(_backend_command("compare")))
command("bench", "compile time and samples/s of a graph on a backend")(
    arguments(_bench_args)(_backend_command("bench")))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyir", description=__doc__.split("\n")[0])
    from . import __version__
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
        print(f"{name}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
