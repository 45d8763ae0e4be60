"""What an export handler sees besides its module: `ExportContext` (example tensors and shapes,
element kind, float dtype, errors naming module and fx node, graph metadata, folding into the
producing node).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.fx as fx

from ..ir.errors import GraphError

__all__ = ["ExportContext"]


class ExportContext:
    """What a handler sees besides the module.

    name: the polyir node name it becomes; fx_node: the fx node's name; target: the module's
    qualified name; input / output: the example tensors (batch first; for (out, state) modules
    output is out); input_shape / output_shape: shapes without the batch dim; input_elem: 'real'
    or 'bit' (what feeds it); float_dtype: the numpy float dtype of the model's values.
    exporter: the polyir.exporters.convert.Converter doing the export.
    """

    def __init__(self, exporter, n: fx.Node, name: str, module, inp, out):
        self._exporter, self._node = exporter, n
        self.name, self.fx_node, self.target = name, n.name, str(n.target)
        self.module, self.input, self.output = module, inp, out

    @property
    def input_shape(self) -> tuple:
        return tuple(int(s) for s in self.input.shape[1:])

    @property
    def output_shape(self) -> tuple:
        return tuple(int(s) for s in self.output.shape[1:])

    @property
    def input_elem(self) -> str | None:
        return self._exporter.elem_of(self._exporter.env[self._node.args[0].name])

    @property
    def float_dtype(self):
        return self._exporter.float_dtype

    def array(self, t, dtype=None) -> np.ndarray:
        """A tensor (or array) as a fresh numpy array, float dtype kept unless `dtype` is given."""
        if isinstance(t, torch.Tensor):
            a = t.detach().cpu()
            if a.dtype == torch.bfloat16 or a.dtype == torch.float16:
                a = a.float()
            a = a.numpy()
        else:
            a = np.asarray(t)
        return np.array(a, dtype=dtype, copy=True)

    def error(self, message: str, field: str | None = None, fix: str | None = None) -> GraphError:
        where = f"module {self.target!r} ({type(self.module).__name__}), fx node {self.fx_node!r}"
        return GraphError(f"{where}: {message}", node=self.name, field=field, fix=fix)

    def set_metadata(self, key: str, value) -> None:
        """Set a graph metadata entry; a different value from another node is an error."""
        self._exporter.set_metadata(key, value, self)

    def producer(self) -> tuple[str, Any] | None:
        """(name, node) of the polyir node that alone computes this module's input and feeds
        nothing else, or None (see `replace_producer`)."""
        name = self._exporter.sole_producer(self._node)
        return None if name is None else (name, self._exporter.graph.nodes[name])

    def replace_producer(self, node) -> None:
        """Replace the node `producer()` named (folding this module into it); the handler then
        returns None, so this module's value is the producer's."""
        name, _ = self.producer()
        self._exporter.graph.nodes[name] = node

