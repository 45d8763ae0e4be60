"""Backend "heyoka": a graph compiled into a heyoka `cfunc` (LLVM, SIMD batch mode).

`compile(graph, dtype=np.float64, ...)` builds the expressions with polyir.importers.heyoka
(MLP chains as `heyoka.model.ffnn`) and compiles them. The returned `HeyokaProgram` takes numpy
batches like the other backends: `program(x)` with x of shape (batch, *input_shape) (several
Input nodes: one array each, in order) returns (batch, *output_shape) (several Output nodes: a
tuple). `program.source` is the expressions as text. A stateful (leaky-integrator) graph compiles
to an ODE program instead: `program.run(sequence)` integrates a (T, batch, *input_shape) sequence
with heyoka's Taylor integrator (exact spike times, see to_heyoka_ode).
"""
from __future__ import annotations

import time

import numpy as np

from .. import ir
from ..importers.heyoka import _hy, to_heyoka, to_heyoka_ode

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


class HeyokaProgram:
    """A compiled graph: `__call__` on numpy batches, `.source`, `.cfunc`, `.compile_seconds`;
    `run(sequence)` for stateful graphs."""

    backend = "heyoka"

    def __init__(self, graph: ir.Graph, dtype=np.float64, *, compact_mode: bool | None = None,
                 batch_size: int | None = None, mode: str = "eval", ffnn: bool = True,
                 parallel: bool | None = None, dt: float | None = None, **cfunc_options):
        graph.check()
        self.graph = graph
        self.dtype = _dtype(dtype)
        self.parallel = parallel
        self.input_shapes = [tuple(graph.nodes[n].shape) for n in graph.inputs]
        types = graph.infer_types()
        self.output_shapes = [tuple(types[n].shape) for n in graph.outputs]
        self.stateful = graph.stateful
        self.cfunc = self.ode = None
        hy = _hy()
        t0 = time.perf_counter()
        if self.stateful:
            self.ode = to_heyoka_ode(graph, mode=mode, ffnn=ffnn)
            self.dt = dt if dt is not None else self.ode.dt
            self.source = self.ode.describe()
        else:
            exprs, variables = to_heyoka(graph, mode=mode, ffnn=ffnn)
            self.expressions, self.variables = exprs, variables
            n_ops = sum(int(np.prod(s, dtype=np.int64)) for s in self.output_shapes)
            if compact_mode is None:  # large graphs compile far faster in compact mode
                compact_mode = graph.parameter_count() > 20000 or n_ops > 2000
            size = batch_size or hy.recommended_simd_size(fp_type=self.dtype)
            self.cfunc = hy.cfunc(exprs, variables, fp_type=self.dtype,
                                  compact_mode=bool(compact_mode), batch_size=int(size),
                                  **cfunc_options)
            self.compact_mode, self.batch_size = bool(compact_mode), int(size)
            self.source = "\n".join(f"y[{k}] = {e}" for k, e in enumerate(exprs))
        self.compile_seconds = time.perf_counter() - t0

    def __repr__(self):
        what = "ODE" if self.stateful else f"cfunc, batch {self.batch_size}"
        return f"HeyokaProgram({what}, {np.dtype(self.dtype).name})"

    def _stack_inputs(self, xs) -> tuple[np.ndarray, int, bool]:
        if len(xs) != len(self.input_shapes):
            raise ir.GraphError(f"{len(xs)} input arrays given, the graph has "
                                f"{len(self.input_shapes)} Input nodes", field="inputs",
                                fix="pass one array per Input node, in order")
        cols, batch, single = [], None, False
        for x, shape in zip(xs, self.input_shapes):
            x = np.asarray(x)
            if x.shape == shape:
                x, single = x[None], True
            if x.shape[1:] != shape:
                raise ir.GraphError(f"input of shape {x.shape} does not fit {shape} (plus batch)",
                                    field="inputs", fix=f"pass (batch, {', '.join(map(str, shape))})")
            batch = x.shape[0] if batch is None else batch
            if x.shape[0] != batch:
                raise ir.GraphError("inputs disagree on the batch size", field="inputs",
                                    fix="pass equal batch sizes")
            cols.append(x.reshape(batch, -1))
        flat = np.concatenate(cols, axis=1) if len(cols) > 1 else cols[0]
        return np.ascontiguousarray(flat.T, dtype=self.dtype), batch, single

    def __call__(self, *xs, out=None):
        if self.stateful:
            raise ir.GraphError("a stateful graph runs over time", field="nodes",
                                fix="use program.run(sequence)")
        inputs, batch, single = self._stack_inputs(xs)
        kw = {} if self.parallel is None else {"batch_parallel": bool(self.parallel)}
        y = self.cfunc(inputs, **kw)  # (n_out, batch)
        outs, k = [], 0
        for shape in self.output_shapes:
            size = int(np.prod(shape, dtype=np.int64))
            o = np.ascontiguousarray(y[k:k + size].T).reshape((batch,) + shape)
            outs.append(o[0] if single else o)
            k += size
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run(self, sequence, dt: float | None = None, **kwargs):
        """Stateful graphs: (T, batch, *input_shape) or (T, *input_shape) -> outputs
        (T, batch, *output_shape) (or (T, *output_shape)); several Outputs: a tuple."""
        if not self.stateful:
            x = np.asarray(sequence)
            return np.stack([self(x[t]) for t in range(x.shape[0])])
        x = np.asarray(sequence, np.float64)
        n_in = sum(int(np.prod(s, dtype=np.int64)) for s in self.input_shapes)
        if len(self.input_shapes) != 1:
            raise ir.GraphError("run() takes graphs with one Input node", field="inputs",
                                fix="merge the inputs")
        shape = self.input_shapes[0]
        batched = x.ndim == len(shape) + 2
        xb = x.reshape(x.shape[0], x.shape[1] if batched else 1, n_in)
        r = self.ode.run(xb, dt if dt is not None else self.dt, **kwargs)
        self.last_run = r
        outs, k = [], 0
        for oshape in self.output_shapes:
            size = int(np.prod(oshape, dtype=np.int64))
            o = r.outputs[..., k:k + size].reshape(x.shape[0], xb.shape[1], *oshape)
            outs.append(o if batched else o[:, 0])
            k += size
        return outs[0] if len(outs) == 1 else tuple(outs)


def compile(graph: ir.Graph, **options) -> HeyokaProgram:  # noqa: A001 - backend entry point
    """Graph -> HeyokaProgram. Options: dtype (float64 | float32), compact_mode (default: on for
    large graphs), batch_size (SIMD batch; default heyoka's recommended size), mode ("eval" |
    "train" for logic layers), ffnn (map MLP chains to heyoka.model.ffnn), parallel (batch
    parallel evaluation), dt (stateful graphs; default the graph's metadata dt); other options go
    to heyoka.cfunc."""
    return HeyokaProgram(graph, **options)


compile_graph = compile

__all__ = ["HeyokaProgram", "compile", "compile_graph"]
