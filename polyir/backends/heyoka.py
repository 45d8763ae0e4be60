"""Backend "heyoka": a graph compiled into a heyoka `cfunc` (LLVM, SIMD batch mode).

`compile(graph, dtype=np.float64, ...)` builds the expressions with polyir.importers.heyoka
(MLP chains as `heyoka.model.ffnn`) and compiles them. The returned `HeyokaProgram` takes numpy
batches like the other backends: `program(x)` with x of shape (batch, *input_shape) (several
Input nodes: one array each, in order) returns (batch, *output_shape) (several Output nodes: a
tuple). `program.source` is the expressions as text. A stateful (leaky-integrator) graph compiles
to an ODE program instead: `program.run(sequence)` integrates a (T, batch, *input_shape) sequence
with heyoka's Taylor integrator, each step's input held constant (the exact solution, not Euler;
exact spike times, see to_heyoka_ode); `program(x)` is one such step from the zero state.
"""
from __future__ import annotations

import time

import numpy as np

from .. import ir
from . import Compiled
from ..importers.heyoka import _hy, to_heyoka
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


class HeyokaProgram(Compiled):
    """A compiled graph behind the backends' `Compiled` interface: `__call__(*inputs)` on
    (batch, *shape) arrays, `run(*sequences)` on (T, batch, *shape), `.source`, plus `.cfunc`
    (stateless graphs), `.ode` (stateful ones), `.compile_seconds` and `.last_run` (the last ODE
    run, with its exact spike times). Inputs are converted to the program's dtype (float64 by
    default, or float32) and outputs come back in it. Bit inputs are read as x != 0 in eval
    mode; in train mode (relaxed logic) they stay real values in [0, 1]."""

    backend = "heyoka"

    def __init__(self, graph: ir.Graph, dtype=np.float64, *, compact_mode: bool | None = None,
                 batch_size: int | None = None, mode: str = "eval", ffnn: bool = True,
                 parallel: bool | None = None, dt: float | None = None, **cfunc_options):
        graph.check()
        g = graph.flattened()
        types = g.infer_types()
        self.graph = graph
        self.program = None
        self.dtype = _dtype(dtype)
        self.parallel, self.mode = parallel, mode
        self.inputs = [(n, tuple(g.nodes[n].shape), g.nodes[n].elem) for n in g.inputs]
        self.outputs = [(n, tuple(types[n].shape), types[n].elem) for n in g.outputs]
        self.stateful = graph.stateful
        self.cfunc = self.ode = self.last_run = None
        hy = _hy()
        t0 = time.perf_counter()
        if self.stateful:
            self.ode = to_heyoka_ode(graph, mode=mode, ffnn=ffnn)
            self.dt = dt if dt is not None else self.ode.dt
            self.source = self.ode.describe()
        else:
            exprs, variables = to_heyoka(graph, mode=mode, ffnn=ffnn)
            self.expressions, self.variables = exprs, variables
            if compact_mode is None:  # large graphs compile far faster in compact mode
                compact_mode = graph.parameter_count() > 20000 or len(exprs) > 2000
            size = batch_size or hy.recommended_simd_size(fp_type=self.dtype)
            self.cfunc = hy.cfunc(exprs, variables, fp_type=self.dtype,
                                  compact_mode=bool(compact_mode), batch_size=int(size),
                                  **cfunc_options)
            self.compact_mode, self.batch_size = bool(compact_mode), int(size)
            self.source = "\n".join(f"y[{k}] = {e}" for k, e in enumerate(exprs))
        self.compile_seconds = time.perf_counter() - t0

    def __repr__(self):
        what = "ODE" if self.stateful else f"cfunc batch {self.batch_size}"
        return f"<polyir heyoka program ({what}, {np.dtype(self.dtype).name})>"

    def _convert(self, k: int, x, lead: int):
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
            x = x.detach().cpu().numpy()
        checked = super()._convert(k, x, lead)  # shape and dtype checks
        if checked.dtype == np.uint8 and self.mode == "eval":
            return checked.astype(self.dtype)  # bits read as x != 0, as on every backend
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _run(self, arrays, steps: int, batch: int, threads, lead: tuple):
        if self.stateful:
            return self._run_ode(arrays, steps, batch, lead)
        n = steps * batch
        flat = [a.reshape(n, -1) for a in arrays]
        x = np.concatenate(flat, axis=1) if len(flat) > 1 else flat[0]
        kw = {} if self.parallel is None else {"batch_parallel": bool(self.parallel)}
        y = self.cfunc(np.ascontiguousarray(x.T), **kw) if n else \
            np.empty((len(self.expressions), 0), self.dtype)
        outs, k = [], 0
        for _, shape, _ in self.outputs:
            size = int(np.prod(shape, dtype=np.int64))
            outs.append(np.ascontiguousarray(y[k:k + size].T).reshape(lead + shape))
            k += size
        return outs

    def _run_ode(self, arrays, steps, batch, lead):
        x = np.concatenate([a.reshape(steps, batch, -1) for a in arrays], axis=2)
        r = self.ode.run(x.astype(np.float64), self.dt)
        self.last_run = r
        outs, k = [], 0
        for _, shape, _ in self.outputs:
            size = int(np.prod(shape, dtype=np.int64))
            outs.append(r.outputs[..., k:k + size].astype(self.dtype).reshape(lead + shape))
            k += size
        return outs


def compile(graph: ir.Graph, **options) -> HeyokaProgram:  # noqa: A001 - backend entry point
    """Graph -> HeyokaProgram. Options: dtype (float64 | float32), compact_mode (default: on for
    large graphs), batch_size (SIMD batch; default heyoka's recommended size), mode ("eval" |
    "train" for logic layers), ffnn (map MLP chains to heyoka.model.ffnn), parallel (batch
    parallel evaluation), dt (stateful graphs; default the graph's metadata dt); other options go
    to heyoka.cfunc."""
    return HeyokaProgram(graph, **options)


compile_graph = compile

__all__ = ["HeyokaProgram", "compile", "compile_graph"]
