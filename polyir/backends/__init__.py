"""Backends: compile a Graph into a callable on numpy arrays.

    run = polyir.compile(graph, "c")       # generated C, bit-sliced logic (polyir.backends.c)
    run = polyir.compile(graph, "cuda")    # CuPy raw kernels (polyir.backends.cuda)
    run = polyir.compile(graph, "heyoka")  # heyoka compiled functions (polyir.backends.heyoka)
    run = polyir.compile(graph, "torch")   # polyir.to_torch(graph).eval(), numpy in and out
    y = run(x)                  # x: (batch, *input shape); several Inputs -> several arguments
    ys = run.run(sequence)      # stateful graphs: (T, batch, *shape) -> (T, batch, *out shape)
    run.source                  # the generated code

Every backend module is imported on first use, so importing polyir needs no compiler, CuPy or
heyoka. All compiled callables share `Compiled`'s input checks: arrays are converted to the
expected dtype and made contiguous, or refused with a GraphError that says what was expected.
"""
from __future__ import annotations

import importlib

import numpy as np

from ..ir.errors import GraphError, PolyirError

BACKENDS = {"c": "polyir.backends.c", "cuda": "polyir.backends.cuda",
            "heyoka": "polyir.backends.heyoka", "torch": "polyir.backends"}


class CompileError(PolyirError, RuntimeError):
    """Building a backend's code failed (no compiler, a compiler error, no GPU / CuPy)."""

    def __init__(self, message: str, *, fix: str | None = None):
        self.reason, self.fix = message, fix
        super().__init__(message + (f"\n(fix: {fix})" if fix else ""))


class Compiled:
    """What compile() returns: `__call__(*inputs)`, `run(*sequences)`, `.source`, `.backend`.

    Inputs are batch first: (batch, *shape) for `__call__`, (T, batch, *shape) for `run`. Real
    inputs become the program's dtype (float32, or float64 for a graph with float64 parameters,
    as polyir.to_torch does), bit inputs (Input elem='bit') uint8 after the bit rule (only 0 and 1,
    see ir.Input; `relaxed_bits` lifts it for relaxed evaluation); non-contiguous arrays are
    copied. A stateless graph's `run` treats T x batch as one batch; a stateful
    graph's `__call__` is one step from the zero state. One output -> one array; several -> a
    tuple in Output order. Subclasses implement `_execute(arrays, outs, steps, batch, threads)`.
    """

    backend = "?"
    relaxed_bits = False  # True: bit inputs are relaxed values in [0, 1] (train mode)
    # True: the program itself refuses bytes other than 0 / 1 in uint8 / bool bit inputs (one pass
    # over the data instead of two); `_non_bit_error` then names the input
    checks_bit_bytes = False

    def __init__(self, program, source: str):
        self.program = program
        self.source = source
        self.inputs = [(s.name, tuple(s.shape), s.elem) for s in program.inputs]
        self.outputs = [(s.name, tuple(s.shape), s.elem) for s in program.outputs]
        self.stateful = program.stateful
        self.dtype = np.dtype(getattr(program, "dtype", "float32"))

    def __repr__(self):
        ins = ", ".join(f"{n}{s}" for n, s, _ in self.inputs)
        outs = ", ".join(f"{n}{s}" for n, s, _ in self.outputs)
        return f"<polyir {self.backend} program ({ins}) -> ({outs})>"

    # --- input checks -------------------------------------------------------------------------
    def _convert(self, k: int, x, lead: int):
        name, shape, elem = self.inputs[k]
        what = "(T, batch, " if lead == 2 else "(batch, "
        want = what + ", ".join(map(str, shape)) + ")"
        if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
            x = x.detach().cpu().numpy()
        try:
            arr = np.asarray(x)
        except Exception as exc:
            raise GraphError(f"input {k} cannot be read as an array ({exc})", node=name,
                             field="input", fix=f"pass a numpy array of shape {want}") from None
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise GraphError(f"input {k} has dtype {arr.dtype}; expected numbers", node=name,
                             field="input", fix=f"pass a float32 array of shape {want}")
        if arr.ndim != len(shape) + lead or tuple(arr.shape[lead:]) != shape:
            raise GraphError(f"input {k} has shape {arr.shape}, expected {want}", node=name,
                             field="input",
                             fix="add the batch dim (x[None]) for one sample" if
                             tuple(arr.shape) == shape else f"reshape it to {want}")
        if elem == "bit" and not self.relaxed_bits:
            if arr.dtype == np.bool_ or (arr.dtype == np.uint8 and self.checks_bit_bytes):
                # bytes read in place; the program's packing loop refuses values other than 0 / 1
                return np.ascontiguousarray(arr).view(np.uint8)
            bad = (arr > 1) if arr.dtype.kind in "bu" else ~((arr == 0) | (arr == 1))
            if bad.any():
                from ..ir import Input
                raise Input.non_bit_error(name, arr[bad].flat[0].item())
            return np.ascontiguousarray(arr, dtype=np.uint8)
        return np.ascontiguousarray(arr, dtype=self.dtype)

    def _non_bit_error(self, arrays, packed_mask: int = 0):
        """The GraphError for the first bit input (not given packed) holding a byte other than
        0 / 1, after the program reported one."""
        from ..ir import Input
        for k, (arr, (name, _, elem)) in enumerate(zip(arrays, self.inputs)):
            if elem == "bit" and not (packed_mask >> k) & 1:
                bad = arr > 1
                if bad.any():
                    return Input.non_bit_error(name, arr[bad].flat[0].item())
        return GraphError("a bit input holds a value other than 0 or 1", field="input",
                          fix="give bit inputs as 0 / 1 (x > 0.5)")

    def _prepare(self, xs, lead: int):
        if len(xs) != len(self.inputs):
            names = [n for n, _, _ in self.inputs]
            raise GraphError(f"got {len(xs)} input array(s), the graph has {len(self.inputs)} "
                             f"Input node(s) {names}", field="input",
                             fix="pass one array per Input, in the graph's Input order")
        arrays = [self._convert(k, x, lead) for k, x in enumerate(xs)]
        dims = {a.shape[:lead] for a in arrays}
        if len(dims) > 1:
            raise GraphError(f"inputs disagree on their leading (time/batch) dims: {sorted(dims)}",
                             field="input", fix="give every input the same batch size")
        return arrays, (dims.pop() if dims else (0,) * lead)

    def _run(self, arrays, steps: int, batch: int, threads, lead: tuple):
        outs = [np.empty(lead + shape, self.dtype) for _, shape, _ in self.outputs]
        if steps * batch > 0:
            self._execute(arrays, outs, steps, batch, threads)
        return outs

    @staticmethod
    def _one(outs):
        return outs[0] if len(outs) == 1 else tuple(outs)

    # --- public -------------------------------------------------------------------------------
    def __call__(self, *inputs, threads: int | None = None):
        arrays, (batch,) = self._prepare(inputs, 1)
        return self._one(self._run(arrays, 1, batch, threads, (batch,)))

    def run(self, *sequences, threads: int | None = None):
        """(T, batch, *shape) per input -> (T, batch, *out shape) per output, state carried
        across the T steps (zero at the start)."""
        arrays, (steps, batch) = self._prepare(sequences, 2)
        if not self.stateful:
            arrays = [a.reshape((steps * batch,) + a.shape[2:]) for a in arrays]
            outs = self._run(arrays, 1, steps * batch, threads, (steps * batch,))
            return self._one([o.reshape((steps, batch) + o.shape[1:]) for o in outs])
        return self._one(self._run(arrays, steps, batch, threads, (steps, batch)))

    def _execute(self, arrays, outs, steps, batch, threads):  # pragma: no cover - abstract
        raise NotImplementedError


class TorchCompiled(Compiled):
    """polyir.to_torch(graph).eval() behind the Compiled interface (the reference backend)."""

    backend = "torch"

    def __init__(self, graph, dt=None, **options):
        import torch
        from ..importers.torch import to_torch
        from .lower import graph_dtype
        from .program import IOSpec, Program
        g = graph.flattened()
        types = g.infer_types()
        kwargs = {"dt": dt} if dt is not None else {}
        self.module = to_torch(graph, **kwargs, **options).eval()
        self._torch = torch
        program = Program([], [], [IOSpec(n, -1, types[n].shape, types[n].elem) for n in g.inputs],
                          [IOSpec(n, -1, types[n].shape, types[n].elem) for n in g.outputs],
                          graph.stateful, dt, [(n, type(k).__name__) for n, k in g.nodes.items()],
                          graph_dtype(graph))
        super().__init__(program, repr(self.module))

    def _execute(self, arrays, outs, steps, batch, threads):
        torch = self._torch
        if threads:
            torch.set_num_threads(int(threads))
        xs = [torch.from_numpy(a.astype(self.dtype) if a.dtype == np.uint8 else a)
              for a in arrays]
        with torch.no_grad():
            if not self.stateful:
                ys = self.module(*xs)
                ys = ys if isinstance(ys, (tuple, list)) else (ys,)
                for o, y in zip(outs, ys):
                    o[...] = y.reshape(o.shape).numpy()
                return
            ys = self.module.run(*xs)
            ys = ys if isinstance(ys, (tuple, list)) else (ys,)
            for o, y in zip(outs, ys):
                o[...] = y.reshape(o.shape).numpy()

    def _run(self, arrays, steps, batch, threads, lead):
        if self.stateful:
            arrays = [a.reshape((steps, batch) + a.shape[len(lead):]) if len(lead) == 2
                      else a[None] for a in arrays]
        outs = [np.empty((steps, batch) + shape if self.stateful else (steps * batch,) + shape,
                         self.dtype) for _, shape, _ in self.outputs]
        if steps * batch > 0:
            self._execute(arrays, outs, steps, batch, threads)
        return [o.reshape(lead + o.shape[(2 if self.stateful else 1):]) for o in outs]


#: backends that run logic in eval (hard) semantics, where polyir.optimize is exact
OPTIMIZED = ("c", "cuda")


def compile(graph, backend: str = "c", optimize: bool = True,  # noqa: A001 - the public name
            **options) -> Compiled:
    """Graph -> compiled callable on `backend` ('c', 'cuda', 'heyoka', 'torch'); options go to
    the backend (see each module's compile). The C and CUDA backends first run polyir.optimize
    (bit-identical outputs, fewer gates); optimize=False compiles the graph as it is."""
    if backend not in BACKENDS:
        raise GraphError(f"unknown backend {backend!r}", field="backend",
                         fix=f"use one of {sorted(BACKENDS)}")
    if backend == "torch":
        return TorchCompiled(graph, **options)
    if backend in OPTIMIZED:
        options["optimize"] = optimize
    return importlib.import_module(BACKENDS[backend]).compile(graph, **options)


__all__ = ["compile", "Compiled", "CompileError", "TorchCompiled", "BACKENDS"]
