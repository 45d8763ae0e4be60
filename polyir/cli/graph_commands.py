"""The `polyir` subcommands that read a graph file and report on it or rewrite it: info, check,
heyoka (the graph as heyoka expressions or an ODE system), convert (.h5 <-> .nir)."""
from __future__ import annotations

import os
import sys

from ..ir import FormatError, PolyirError
from ..ir.conventions import CONVENTIONS
from ..ir.h5 import load, save
from .registry import arguments, command, file_arg, in_out_args
from .tables import (console, coverage, emit, file_format, graph_table, print_coverage,
                     print_graph, printable)


def _info_args(p):
    p.add_argument("file", nargs="?", help="a polyir .h5 or NIR .nir file (without one, --kinds "
                                          "prints the conformance matrix)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--kinds", action="store_true",
                   help="with a file: also which directions cover each kind; without: run the "
                        "golden cases and print the kind x target conformance matrix")


@command("info", "table of nodes, kinds, shapes and parameter counts")
@arguments(_info_args)
def cmd_info(args) -> int:
    if args.file is None:
        if not args.kinds:
            print("polyir info: give a FILE, or --kinds for the conformance matrix",
                  file=sys.stderr)
            return 2
        from .conformance import conformance
        return conformance(args)
    g = load(args.file)
    data = {"file": args.file, "format": file_format(args.file), "nodes": graph_table(g),
            "edges": [list(e) for e in g.edges], "metadata": g.metadata,
            "parameters": g.parameter_count()}
    if args.kinds:
        data["coverage"] = coverage()
    from ..ir.rules_text import describe
    texts = {n: t for n, k in g.flattened().nodes.items() if (t := describe(k)) is not None}
    if texts:
        data["rules"] = texts

    def render():
        print_graph(g, f"{args.file}  (format {data['format']}, {data['parameters']:,} parameters)")
        if g.metadata:
            console().print("metadata:", g.metadata)
        for n, text in texts.items():  # RuleSet nodes: their rules in text form
            print(printable(f"rules of {n!r}:\n{text}", newlines=True))
        if args.kinds:
            print_coverage()
    emit(args, data, render)
    return 0


@command("check", "validate a file: exit 0, or print what is wrong and exit 1")
@arguments(file_arg)
def cmd_check(args) -> int:
    try:
        g = load(args.file)
    except PolyirError as exc:
        emit(args, {"file": args.file, "ok": False, "error": type(exc).__name__,
                    "message": str(exc)},
             lambda: print(printable(f"{type(exc).__name__}: {exc}", newlines=True),
                           file=sys.stderr))
        return 1
    emit(args, {"file": args.file, "ok": True, "nodes": len(g.nodes), "edges": len(g.edges)},
         lambda: print(f"{args.file}: ok ({len(g.nodes)} nodes, {len(g.edges)} edges)"))
    return 0


@command("heyoka", "print a graph as heyoka expressions (or, with --ode, as an ODE system)")
@arguments(lambda p: (file_arg(p),
                      p.add_argument("--ode", action="store_true",
                                     help="leaky-integrator graph -> ODE system with spike events"),
                      p.add_argument("--mode", choices=("eval", "train"), default="eval",
                                     help="logic layers: hard gates (eval) or relaxed (train)"),
                      p.add_argument("--no-ffnn", action="store_true",
                                     help="build MLP chains node by node, not as heyoka ffnn")))
def cmd_heyoka(args) -> int:
    from ..importers.heyoka import to_heyoka
    from ..importers.heyoka_ode import to_heyoka_ode
    g = load(args.file)
    if args.ode:
        ode = to_heyoka_ode(g, mode=args.mode, ffnn=not args.no_ffnn)
        data = {"file": args.file, "equations": [[str(v), str(r)] for v, r in ode.sys],
                "outputs": [str(e) for e in ode.outputs], "inputs": ode.n_inputs,
                "spiking": [n.name for n in ode.spiking], "text": ode.describe()}
        emit(args, data, lambda: print(printable(ode.describe(), newlines=True)))
        return 0
    exprs, variables = to_heyoka(g, mode=args.mode, ffnn=not args.no_ffnn)
    data = {"file": args.file, "inputs": [str(v) for v in variables],
            "outputs": [str(e) for e in exprs]}
    emit(args, data, lambda: print(printable(f"inputs: {', '.join(data['inputs'])}\n" + "\n".join(
        f"y[{k}] = {e}" for k, e in enumerate(data["outputs"])), newlines=True)))
    return 0


_CONVERT_FORMATS = {".h5": "polyir", ".nir": "nir"}


def _convert_format(path: str) -> str:
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in _CONVERT_FORMATS:
        raise FormatError(f"unknown extension {ext or '(none)'!r}: use .h5 (polyir) or .nir (NIR)",
                          path=str(path))
    return _CONVERT_FORMATS[ext]


def _convert_args(p):
    in_out_args("a .h5 or .nir file", "the .h5 or .nir file to write")(p)
    p.add_argument("--convention", choices=sorted(CONVENTIONS),
                   help="read INPUT as the NIR file this spiking library's exporter wrote "
                        "(its time step, time constants, reset and spike rules)")


@command("convert", "convert a graph between .h5 (polyir) and .nir (NIR), chosen by extension")
@arguments(_convert_args)
def cmd_convert(args) -> int:
    _convert_format(args.input)
    out_format = _convert_format(args.output)
    g = load(args.input, convention=args.convention)
    if out_format == "nir":
        import nir

        from ..importers.nir import to_nir
        nir.write(args.output, to_nir(g))
    else:
        save(g, args.output)
    data = {"input": args.input, "output": args.output, "format": out_format,
            "nodes": len(g.nodes), "edges": len(g.edges), "bytes": os.path.getsize(args.output)}
    emit(args, data, lambda: print(f"{args.input} -> {args.output} ({out_format}, "
                                   f"{data['nodes']} nodes, {data['bytes']:,} bytes)"))
    return 0


@command("optimize", "write an equivalent graph with fewer logic gates (bit-identical outputs)")
@arguments(in_out_args("a .h5 or .nir file", "the .h5 file to write"))
def cmd_optimize(args) -> int:
    from rich.table import Table

    from ..ir.optimize import gate_count, optimize
    g = load(args.input)
    h = optimize(g)
    save(h, args.output)
    before, after = gate_count(g), gate_count(h)
    rows = [{"node": n, "kind": h.nodes[n].kind_name, "before": before[n], "after": after[n]}
            for n in before]
    total = {"before": sum(before.values()), "after": sum(after.values())}
    data = {"input": args.input, "output": args.output, "nodes": rows, "gates": total}

    def render():
        t = Table(title=f"{args.input} -> {args.output}")
        for col in ("node", "kind", "gates before", "gates after", "kept"):
            t.add_column(col, justify="left" if col in ("node", "kind") else "right")
        for r in rows + [{"node": "total", "kind": "", **total}]:
            kept = f"{100 * r['after'] / r['before']:.1f}%" if r["before"] else "-"
            t.add_row(r["node"], r["kind"], f"{r['before']:,}", f"{r['after']:,}", kept)
        console().print(t)

    emit(args, data, render)
    return 0
