"""The `polyir` subcommands that compile a graph with a backend: codegen (write the C), run (on
.npy inputs), compare (several backends against the first), bench (compile time and throughput).

Each `codegen | run | compare | bench` function takes the parsed argparse namespace and returns
(exit code, data for --json, lines to print); `_register` turns it into a subcommand.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from ..backends import compile as compile_graph
from ..ir.errors import GraphError
from ..ir.h5 import load
from .registry import arguments, command, file_arg
from .tables import emit, printable

BACKEND_NAMES = ("c", "torch", "cuda", "heyoka")


def count(least: int):
    """An argparse type: an integer >= `least` (a bad value is a usage error, not a traceback)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value
    parse.__name__ = f"integer >= {least}"
    return parse


def add_backend_options(p, default_backend="c", several=False):
    """--backend (or --backends with several=True) and the options every backend command takes."""
    if several:
        p.add_argument("--backends", default="torch,c",
                       help="comma-separated backends, the first is the reference (default torch,c)")
    else:
        p.add_argument("--backend", default=default_backend, choices=BACKEND_NAMES,
                       help=f"the backend to run on (default {default_backend})")
    p.add_argument("--threads", type=count(0), default=None,
                   help="threads for the C backend (default 1; 0 = all cores)")
    p.add_argument("--dt", type=float, default=None, help="time step for neurons (seconds)")
    p.add_argument("--discretization", choices=("euler", "exact"), default=None,
                   help="how neurons step (default: the graph's metadata, else euler)")
    p.add_argument("--portable", action="store_true", help="C: compile without -march=native")


def options_for(backend: str, args) -> dict:
    opts = {}
    if getattr(args, "dt", None) is not None:
        opts["dt"] = args.dt
    if getattr(args, "discretization", None) is not None and backend in ("c", "cuda", "torch"):
        opts["discretization"] = args.discretization
    if backend == "c":
        if getattr(args, "threads", None) is not None:
            opts["threads"] = args.threads
        if getattr(args, "portable", False):
            opts["portable"] = True
    return opts


def random_inputs(program, batch: int, steps: int | None, seed: int):
    rng = np.random.default_rng(seed)
    xs = []
    for _, shape, elem in program.inputs:
        full = ((steps,) if steps else ()) + (batch,) + tuple(shape)
        if elem == "bit":
            xs.append(rng.integers(0, 2, full).astype(np.uint8))
        else:
            xs.append(rng.normal(size=full).astype(np.float32))
    return xs


def load_inputs(paths):
    xs = []
    for p in paths:
        try:
            x = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise GraphError(f"cannot read input {p!r}: {exc or 'the file is empty'}",
                             field="input", fix="pass a .npy file written by numpy.save") from None
        if not isinstance(x, np.ndarray):  # an .npz archive holds several arrays
            x.close()
            raise GraphError(f"input {p!r} is an archive of arrays, not one array", field="input",
                             fix="pass one .npy file per graph Input (numpy.save)")
        xs.append(x)
    return xs


def _as_list(y):
    return list(y) if isinstance(y, tuple) else [y]


def evaluate(program, xs, sequence: bool):
    return _as_list(program.run(*xs) if sequence else program(*xs))


def _write(path: str, data, mode: str = "w") -> None:
    tmp = path + ".tmp"
    with open(tmp, mode) as f:
        f.write(data)
    os.replace(tmp, path)


def codegen(args):
    from ..backends.c import codegen_files
    g = load(args.file)
    opts = {"word_bits": args.word_bits, "prefix": args.prefix, "optimize": not args.no_optimize}
    if args.dt is not None:
        opts["dt"] = args.dt
    if getattr(args, "discretization", None) is not None:
        opts["discretization"] = args.discretization
    src, header, tables = codegen_files(g, **opts)
    if args.output in (None, "-"):
        if args.header or tables:
            raise GraphError("the header and data tables need files", field="output",
                             fix="pass -o model.c")
        return 0, {"source": src}, [src]
    _write(args.output, src)
    written = [args.output]
    if args.header:
        _write(args.header, header)
        written.append(args.header)
    if tables:  # one blob: table k starts at the sum of the earlier tables' sizes, each padded to 64
        blob = b"".join(t.tobytes() + bytes(-t.nbytes % 64) for t in tables)
        _write(args.output + ".tables", blob, "wb")
        written.append(args.output + ".tables")
    p = args.prefix
    data = {"file": args.file, "output": args.output, "bytes": len(src), "written": written,
            "tables": [{"dtype": t.dtype.name, "count": int(t.size)} for t in tables],
            "entry_points": [p + "run", p + "run_packed", p + "run_tables", p + "tile",
                             p + "workspace_bytes", p + "table_count", p + "table_bytes"]}
    return 0, data, [f"wrote {', '.join(written)} ({len(src):,} bytes of C); entry point "
                     f"{p}run{'_tables (pass the tables)' if tables else ''}, build with: "
                     f"cc -O3 -march=native -c {args.output}"]


def run(args):
    g = load(args.file)
    program = compile_graph(g, args.backend, **options_for(args.backend, args))
    xs = load_inputs(args.input)
    sequence = args.sequence or (program.stateful and xs and
                                 np.ndim(xs[0]) == len(program.inputs[0][1]) + 2)
    ys = evaluate(program, xs, sequence)
    data = {"file": args.file, "backend": args.backend,
            "outputs": [{"name": n, "shape": list(y.shape)} for (n, _, _), y in
                        zip(program.outputs, ys)]}
    lines = []
    if args.output:
        if len(ys) == 1:
            np.save(args.output, ys[0])
            data["written"] = [args.output]
        else:
            stem = args.output[:-4] if args.output.endswith(".npy") else args.output
            data["written"] = []
            for k, y in enumerate(ys):
                np.save(f"{stem}_{k}.npy", y)
                data["written"].append(f"{stem}_{k}.npy")
        lines.append(f"wrote {', '.join(data['written'])}")
    for (n, _, _), y in zip(program.outputs, ys):
        lines.append(f"{n}: shape {y.shape}")
        if not args.output:
            with np.printoptions(precision=5, suppress=True, threshold=60):
                lines.append(str(y))
    return 0, data, lines


def compare(args):
    g = load(args.file)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if len(names) < 2:
        raise GraphError("compare needs at least two backends", field="backends",
                         fix="pass --backends torch,c")
    programs = {b: compile_graph(g, b, **options_for(b, args)) for b in names}
    ref = programs[names[0]]
    if args.input:
        xs = load_inputs(args.input)
        sequence = ref.stateful and np.ndim(xs[0]) == len(ref.inputs[0][1]) + 2
    else:
        sequence = ref.stateful
        xs = random_inputs(ref, args.batch, args.steps if sequence else None, args.seed)
    results = {b: evaluate(p, xs, sequence) for b, p in programs.items()}
    rows, ok = [], True
    for b in names[1:]:
        for k, ((name, _, elem), want, got) in enumerate(zip(ref.outputs, results[names[0]],
                                                             results[b])):
            want = np.asarray(want, np.float64)
            got = np.asarray(got, np.float64)
            diff = np.abs(got - want)
            bad = ~(diff <= args.atol + args.rtol * np.abs(want))
            bad |= np.isnan(got) != np.isnan(want)
            row = {"backend": b, "output": name, "shape": list(got.shape),
                   "max_abs_error": float(np.nanmax(diff)) if diff.size else 0.0,
                   "mismatches": int(bad.sum()), "elements": int(bad.size)}
            if elem == "bit":
                row["mismatching_bits"] = int((got != want).sum())
            rows.append(row)
            ok &= row["mismatches"] == 0
    lines = [f"reference: {names[0]}; {'sequence ' if sequence else ''}inputs "
             + ", ".join(str(x.shape) for x in xs)]
    for r in rows:
        extra = f", mismatching bits {r['mismatching_bits']}" if "mismatching_bits" in r else ""
        lines.append(f"{r['backend']:>8} {r['output']}: max abs error {r['max_abs_error']:.3g}, "
                     f"{r['mismatches']} of {r['elements']} outside atol={args.atol:g} "
                     f"rtol={args.rtol:g}{extra}")
    lines.append("OK" if ok else "MISMATCH")
    return (0 if ok else 1), {"reference": names[0], "results": rows, "ok": bool(ok)}, lines


def bench(args):
    g = load(args.file)
    t0 = time.perf_counter()
    program = compile_graph(g, args.backend, **options_for(args.backend, args))
    compile_s = time.perf_counter() - t0
    sequence = program.stateful
    xs = random_inputs(program, args.batch, args.steps if sequence else None, args.seed)
    evaluate(program, xs, sequence)  # warm up (caches, lazy initialisation)
    wall, cpu = 1e30, 1e30
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        evaluate(program, xs, sequence)
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    n = args.batch * (args.steps if sequence else 1)
    data = {"file": args.file, "backend": args.backend, "compile_seconds": compile_s,
            "batch": args.batch, "steps": args.steps if sequence else 1,
            "samples_per_second": n / wall, "samples_per_cpu_second": n / max(cpu, 1e-9),
            "seconds": wall}
    what = "sample-steps" if sequence else "samples"
    lines = [f"{args.file} on {args.backend}: compile {compile_s:.2f} s; batch {args.batch:,}"
             + (f" x {args.steps} steps" if sequence else "")
             + f": {wall * 1e3:.2f} ms, {n / wall / 1e6:.3f} M {what}/s "
               f"({n / max(cpu, 1e-9) / 1e6:.3f} M per CPU-second), best of {args.repeat}"]
    return 0, data, lines


def _codegen_args(p):
    file_arg(p)
    p.add_argument("-o", "--output", default=None, help="the .c file to write (default: stdout)")
    p.add_argument("--word-bits", type=int, default=256, choices=(64, 128, 256, 512),
                   help="samples per machine word (default 256)")
    p.add_argument("--dt", type=float, default=None, help="time step for neurons (seconds)")
    p.add_argument("--header", default=None, help="also write a C header declaring the entry points")
    p.add_argument("--prefix", default="polyir_",
                   help="prefix of every exported symbol (default polyir_), so that several "
                        "models link into one program")
    p.add_argument("--no-optimize", action="store_true",
                   help="compile the graph as it is (default: polyir.optimize first)")


def _run_args(p):
    file_arg(p)
    p.add_argument("--input", action="append", required=True,
                   help="a .npy file per graph Input (repeat for several), batch first")
    p.add_argument("--output", default=None, help="write the output to this .npy file")
    p.add_argument("--sequence", action="store_true",
                   help="inputs are (T, batch, ...) sequences (automatic for stateful graphs)")
    add_backend_options(p)


def _compare_args(p):
    file_arg(p)
    add_backend_options(p, several=True)
    p.add_argument("--input", action="append", default=None,
                   help="a .npy file per graph Input, batch first (default: random inputs)")
    p.add_argument("--batch", type=count(1), default=1000,
                   help="batch size of the random inputs (default 1000)")
    p.add_argument("--steps", type=count(1), default=20,
                   help="time steps of the random inputs for stateful graphs (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--atol", type=float, default=1e-5,
                   help="absolute tolerance against the reference (default 1e-5)")
    p.add_argument("--rtol", type=float, default=1e-4,
                   help="relative tolerance against the reference (default 1e-4)")


def _bench_args(p):
    file_arg(p)
    add_backend_options(p)
    p.add_argument("--batch", type=count(1), default=100_000,
                   help="samples per call (default 100000)")
    p.add_argument("--steps", type=count(1), default=100,
                   help="time steps per call for stateful graphs (default 100)")
    p.add_argument("--repeat", type=count(1), default=3,
                   help="timed calls after one warm-up call; the best is reported (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")


def _register(name: str, help_text: str, fn, add_args) -> None:
    def handler(args) -> int:
        code, data, lines = fn(args)
        emit(args, data, lambda: print(printable("\n".join(lines), newlines=True)))
        return code
    handler.__name__ = f"cmd_{name}"
    command(name, help_text)(arguments(add_args)(handler))


_register("codegen", "write the standalone C for a graph (entry points in its header comment)",
          codegen, _codegen_args)
_register("run", "run a graph on .npy inputs with a backend (c, torch, cuda, heyoka)", run,
          _run_args)
_register("compare", "run a graph on several backends; max abs error, mismatching bits; exit 1 "
                     "above tolerance", compare, _compare_args)
_register("bench", "compile time and samples/s of a graph on a backend", bench, _bench_args)
