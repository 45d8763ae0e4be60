"""Backend "heyoka": a graph compiled into a heyoka `cfunc` (LLVM, SIMD batch mode).

`compile(graph, ...)` builds the expressions with polyir.importers.heyoka (MLP chains as
`heyoka.model.ffnn`) and compiles them, in the graph's dtype (float32 or float64), in compact mode
when the graph is large enough for it to pay off. The returned `HeyokaProgram` takes numpy
batches like the other backends: `program(x)` with x of shape (batch, *input_shape) (several
Input nodes: one array each, in order) returns (batch, *output_shape) (several Output nodes: a
tuple). `program.source` is the expressions as text. A stateful (leaky-integrator) graph compiles
to an ODE program instead: `program.run(sequence)` integrates a (T, batch, *input_shape) sequence
with heyoka's Taylor integrator in batch mode (one SIMD lane per sequence, spikes as batch
events), each step's input held constant (the exact solution, not Euler; exact spike times, see
polyir.importers.heyoka_ode); `program(x)` is one such step from the zero state. The integrator
is compiled inside compile().
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from .. import ir
from . import Compiled
from .lower import graph_dtype
from ..importers.heyoka import _hy, to_heyoka, use_compact_mode
from ..importers.heyoka_ode import to_heyoka_ode

DTYPES = {"float64": np.float64, "float32": np.float32, "f8": np.float64, "f4": np.float32}


def _dtype(dtype):
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ir.GraphError(f"dtype {dtype!r} is not supported by the heyoka backend",
                                field="dtype", fix="use float64 or float32")
        return DTYPES[dtype]
    dt = np.dtype(dtype).type
    if dt not in (np.float64, np.float32):
        raise ir.GraphError(f"dtype {np.dtype(dtype)} is not supported by the heyoka backend",
                            field="dtype", fix="use float64 or float32")
    return dt


@contextlib.contextmanager
def _heyoka_options(options: dict, what: str):
    """heyoka refuses an unknown keyword with a bare TypeError: say which options it was."""
    try:
        yield
    except TypeError as exc:
        if not options:
            raise
        raise ir.GraphError(f"{what} does not take the option(s) {sorted(options)} "
                            f"({str(exc).splitlines()[0]})", field="options",
                            fix=f"pass only options {what} accepts (see heyoka's docs), or "
                                "none") from None


class HeyokaProgram(Compiled):
    """A compiled graph behind the backends' `Compiled` interface: `__call__(*inputs)` on
    (batch, *shape) arrays, `run(*sequences)` on (T, batch, *shape), `.source`, plus `.cfunc`
    (stateless graphs), `.ode` and `.integrator` (stateful ones), `.compact_mode`,
    `.compile_seconds` (building the expressions and compiling them with LLVM, all of it done
    here, not on the first call) and `.last_run` (the last ODE run, with its exact spike
    times). Inputs are converted to the program's dtype (default: the graph's, float32 unless
    a parameter is float64, as polyir.to_torch decides) and outputs come back in it. Bit inputs
    take only 0 or 1 in eval mode (the bit rule of every backend); in train mode (relaxed logic)
    they stay real values in [0, 1]."""

    backend = "heyoka"

    def __init__(self, graph: ir.Graph, dtype=None, *, compact_mode: bool | None = None,
                 batch_size: int | None = None, mode: str = "eval", ffnn: bool = True,
                 parallel: bool | None = None, dt: float | None = None, **options):
        if options.get("discretization") is not None:
            raise ir.GraphError("the heyoka backend integrates the neurons' continuous-time "
                                "equations (exact spike times): it has no discretization",
                                field="discretization",
                                fix="leave discretization unset, or run the Euler / exact steps "
                                    "with backend 'c', 'cuda' or 'torch'")
        options.pop("discretization", None)
        graph.check()
        g = graph.flattened()
        types = g.infer_types()
        self.graph = graph
        self.program = None
        self.dtype = _dtype(graph_dtype(graph) if dtype is None else dtype)
        self.parallel, self.mode = parallel, mode
        self.relaxed_bits = mode == "train"
        self.inputs = [(n, tuple(g.nodes[n].shape), g.nodes[n].elem) for n in g.inputs]
        self.outputs = [(n, tuple(types[n].shape), types[n].elem) for n in g.outputs]
        self.stateful = graph.stateful
        self.cfunc = self.ode = self.integrator = self.last_run = None
        hy = _hy()
        if compact_mode is None:
            compact_mode = use_compact_mode(graph.parameter_count(),
                                            "integrator" if self.stateful else "cfunc")
        self.compact_mode = bool(compact_mode)
        size = int(batch_size or hy.recommended_simd_size(fp_type=self.dtype))
        t0 = time.perf_counter()
        if self.stateful:
            if parallel is not None:
                raise ir.GraphError("parallel= has no effect on an ODE program: its batch runs "
                                    "as the SIMD lanes of one integrator", field="parallel",
                                    fix="leave parallel unset for stateful graphs")
            self.ode = to_heyoka_ode(graph, mode=mode, ffnn=ffnn)
            self.dt = dt if dt is not None else self.ode.dt
            self.source = self.ode.describe()
            self._ode_options = dict(options, compact_mode=self.compact_mode, fp_type=self.dtype)
            # compiled here, so that compile_seconds is the real cost and run() does not pay it
            with _heyoka_options(options, "heyoka.taylor_adaptive_batch"):
                self.integrator = self.ode.compiled(size, **self._ode_options)
            self.ode.output_function()
        else:
            if dt is not None:
                raise ir.GraphError("dt= has no effect on a stateless graph", field="dt",
                                    fix="leave dt unset")
            exprs, variables = to_heyoka(graph, mode=mode, ffnn=ffnn)
            self.expressions, self.variables = exprs, variables
            with _heyoka_options(options, "heyoka.cfunc"):
                self.cfunc = hy.cfunc(exprs, variables, fp_type=self.dtype,
                                      compact_mode=self.compact_mode, batch_size=size, **options)
            self.source = "\n".join(f"y[{k}] = {e}" for k, e in enumerate(exprs))
        self.batch_size = size
        self.compile_seconds = time.perf_counter() - t0

    def __repr__(self):
        what = f"ODE, {self.batch_size} lanes" if self.stateful else \
            f"cfunc batch {self.batch_size}"
        mode = "compact" if self.compact_mode else "full"
        return f"<polyir heyoka program ({what}, {mode}, {np.dtype(self.dtype).name})>"

    def _convert(self, k: int, x, lead: int):
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
            x = x.detach().cpu().numpy()
        checked = super()._convert(k, x, lead)  # shape and dtype checks
        if checked.dtype == np.uint8 and self.mode == "eval":
            return checked.astype(self.dtype)  # bits, after the bit rule of every backend
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _run(self, arrays, steps: int, batch: int, threads, lead: tuple):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ir.GraphError(f"threads={threads!r} is not a positive number of threads",
                                field="threads", fix="pass threads=1, 2, ... or leave it unset")
        if self.stateful:
            if threads not in (None, 1):
                raise ir.GraphError("threads= has no effect on a heyoka ODE program: its batch "
                                    "runs as the SIMD lanes of one integrator on one thread",
                                    field="threads", fix="leave threads unset (or 1)")
            return self._run_ode(arrays, steps, batch, lead)
        n = steps * batch
        flat = [a.reshape(n, int(np.prod(a.shape[1:], dtype=np.int64))) for a in arrays]
        x = np.concatenate(flat, axis=1) if len(flat) > 1 else flat[0]
        parallel = self.parallel if threads is None else threads > 1
        kw = {} if parallel is None else {"batch_parallel": bool(parallel)}
        if not n:
            y = np.empty((len(self.expressions), 0), self.dtype)
        elif threads is not None and threads > 1:
            hy = _hy()
            before = hy.get_nthreads()
            hy.set_nthreads(int(threads))  # heyoka's (TBB) pool size, restored below
            try:
                y = self.cfunc(np.ascontiguousarray(x.T), **kw)
            finally:
                hy.set_nthreads(before)
        else:
            y = self.cfunc(np.ascontiguousarray(x.T), **kw)
        outs, k = [], 0
        for _, shape, _ in self.outputs:
            size = int(np.prod(shape, dtype=np.int64))
            outs.append(np.ascontiguousarray(y[k:k + size].T).reshape(lead + shape))
            k += size
        return outs

    def _run_ode(self, arrays, steps, batch, lead):
        if self.dt is None:
            raise ir.GraphError("no time step: the graph's metadata has no 'dt'", field="dt",
                                fix="compile with polyir.compile(graph, 'heyoka', dt=1e-4) "
                                    "(seconds), or set graph.metadata['dt']")
        x = np.concatenate([a.reshape(steps, batch, -1) for a in arrays], axis=2)
        r = self.ode.run(x.astype(np.float64), self.dt, batch_size=self.batch_size,
                         **self._ode_options)
        self.last_run = r
        outs, k = [], 0
        for _, shape, _ in self.outputs:
            size = int(np.prod(shape, dtype=np.int64))
            outs.append(r.outputs[..., k:k + size].astype(self.dtype).reshape(lead + shape))
            k += size
        return outs


def compile(graph: ir.Graph, **options) -> HeyokaProgram:  # noqa: A001 - backend entry point
    """Graph -> HeyokaProgram, compiled before it returns. Options: dtype (float64 | float32;
    default the graph's), compact_mode (default: from the graph's size, see
    polyir.importers.heyoka.use_compact_mode), batch_size (SIMD lanes; default heyoka's
    recommended size for the dtype), mode ("eval" | "train" for logic layers), ffnn (map MLP
    chains to heyoka.model.ffnn), parallel (stateless: batch-parallel evaluation), dt (stateful
    graphs; default the graph's metadata dt); other options go to heyoka.cfunc (stateless) or
    the Taylor integrator (stateful, e.g. tol). Calls take threads= (stateless: heyoka's thread
    pool of that size, batch-parallel; stateful: only 1)."""
    return HeyokaProgram(graph, **options)


compile_graph = compile

__all__ = ["HeyokaProgram", "compile", "compile_graph"]
