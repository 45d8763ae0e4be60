"""What the exporter says when it cannot export something: what is wrong and what to do.

A module with no handler gets "no polyir form", the list of what polyir covers and a pointer to
docs/export.md; a fix to *skip* it is offered only when the module is provably the identity in
eval mode (no parameters, and the example output equals its input). Recurrent and embedding
layers (LSTM, GRU, RNN, Embedding, attention), and the logic layers of difflogic / torchlogix and
the neurons of snnTorch / Norse / sinabs that polyir has no kind for, get "no polyir kind" with
what polyir exports of that library. A model whose `forward` loops over time is told to export
its one-step module.
"""
from __future__ import annotations

import inspect
import re

import torch
from torch import nn

from ..ir.errors import GraphError
from .handlers import RECOGNISERS, load_builtin, lookup

__all__ = ["module_refusal", "trace_refusal", "time_loop_refusal", "is_refused_leaf", "COVERED",
           "NO_KIND"]

EXPORT_DOC = "docs/export.md"

#: one line naming what polyir covers, for refusals
COVERED = ("polyir exports Linear, Conv1d/2d (with or without bias), BatchNorm1d/2d, "
           "MaxPool1d/2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, LayerNorm, Softmax/LogSoftmax, "
           "the elementwise activations (ReLU, ReLU6, Hardtanh, Tanh, Sigmoid, GELU, SiLU, ELU, "
           "LeakyReLU, Softplus), polyir.nn layers and neurons, and difflogic / torchlogix logic "
           f"layers; {EXPORT_DOC} lists every module and function")

#: torch.nn classes with no polyir kind (matched by isinstance), and what they are
NO_KIND: dict[type, str] = {
    nn.RNNBase: "a recurrent layer (RNN / LSTM / GRU) that loops over a sequence inside itself",
    nn.RNNCellBase: "a recurrent cell (RNNCell / LSTMCell / GRUCell)",
    nn.Embedding: "an embedding table lookup (integer indices)",
    nn.EmbeddingBag: "an embedding table lookup (integer indices)",
    nn.MultiheadAttention: "attention",
    nn.Transformer: "a transformer",
    nn.TransformerEncoderLayer: "a transformer layer",
    nn.TransformerDecoderLayer: "a transformer layer",
}

#: libraries whose modules polyir recognises by duck typing -> the names of the base classes of
#: their modules that need a kind of their own (neurons, logic layers); None: every module. Such a
#: module that no recogniser knows is kept whole by the tracer and refused by name.
RECOGNISED_LIBRARIES: dict[str, tuple[str, ...] | None] = {
    "difflogic": None,
    "torchlogix": None,
    "snntorch": ("SpikingNeuron", "LeakyParallel"),
    "norse": ("SNNCell", "SNNRecurrentCell", "SNN", "SNNRecurrent"),
    "sinabs": ("StatefulLayer",),
}

_ONE_STEP_EXAMPLE = """class OneStep(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.lif = polyir.nn.LIF(tau, r, v_leak, v_threshold, dt=1e-3)
    def forward(self, x, state=None):          # x: (batch, 4), one time step
        z, state = self.lif(self.fc(x), state)
        return z, state
g = polyir.export(OneStep(), torch.zeros(1, 4))  # the time loop is the importer's run()"""


def _library(module) -> str | None:
    root = (type(module).__module__ or "").split(".")[0]
    if root not in RECOGNISED_LIBRARIES:
        return None
    bases = RECOGNISED_LIBRARIES[root]
    if bases is None or any(c.__name__ in bases for c in type(module).__mro__):
        return root
    return None


def _library_covered(lib: str) -> str:
    """What polyir exports of a library: the names of its recognisers."""
    load_builtin()
    names = [name for name, _, _ in RECOGNISERS if lib in name]
    return ", ".join(names) if names else "nothing"


def is_refused_leaf(module: nn.Module) -> bool:
    """Modules the tracer keeps whole (so that the refusal names them instead of fx failing
    inside their forward): the neurons and layers of a recognised library that no handler
    knows."""
    return _library(module) is not None


def _identity_in_eval(module, example_in, example_out) -> bool:
    if any(True for _ in module.parameters()):
        return False
    if not (isinstance(example_in, torch.Tensor) and isinstance(example_out, torch.Tensor)):
        return False
    return example_in.shape == example_out.shape and torch.equal(example_in, example_out)


def module_refusal(module: nn.Module, target: str, fx_node: str, name: str, example_in=None,
                   example_out=None) -> GraphError:
    """The GraphError for a module no handler knows."""
    cls = type(module).__name__
    where = f"fx node {fx_node!r} calls module {target!r} ({type(module).__module__}.{cls})"
    for base, what in NO_KIND.items():
        if isinstance(module, base):
            return GraphError(f"{where}: {what}; there is no polyir kind for it", node=name,
                              field="type",
                              fix=f"keep it outside the exported part of the model. {COVERED}")
    lib = _library(module)
    if lib is not None:
        return GraphError(f"{where}: {lib}'s {cls} has no polyir kind", node=name,
                          field="type",
                          fix=f"polyir exports of {lib}: {_library_covered(lib)} ({EXPORT_DOC}); "
                              f"build the model from those, keep {cls} outside the exported "
                              f"part, or register a handler that builds it from polyir kinds "
                              f"(@polyir.exporters.handler({cls}))")
    if _identity_in_eval(module, example_in, example_out):
        return GraphError(f"{where}, which has no export handler; it has no parameters and "
                          "returned its input unchanged on the example (the identity in eval "
                          "mode)", node=name, field="type",
                          fix=f"if it is the identity in eval mode: "
                              f"polyir.exporters.register({cls}, None) skips it")
    return GraphError(f"{where}, which has no polyir form", node=name, field="type",
                      fix=f"{COVERED}. To export {cls}, register a handler that builds it from "
                          f"polyir kinds: @polyir.exporters.handler({cls}) on a function "
                          "(ctx, name, module, values) -> polyir.<Kind>(...)")


def _loops(forward) -> bool:
    try:
        source = inspect.getsource(forward)
    except (OSError, TypeError):
        return False
    return re.search(r"^\s*(for|while)\b", source, re.M) is not None


def _steps_in_time(module: nn.Module) -> bool:
    """Whether `module` is a one-step stateful layer: forward(x, state) -> (y, state)."""
    h = lookup(module)
    if h is not None and h.returns_state:
        return True
    try:
        params = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 and any(k in p.lower() for p in params[1:] for k in ("state", "mem"))


def time_loop_refusal(root: nn.Module, exc: GraphError) -> GraphError | None:
    """For a conversion error in a model whose forward loops and holds one-step stateful layers
    (fx unrolls a loop of constant length, and the unrolled steps fail somewhere): the error
    that says what to export instead; None when that is not the case."""
    if not _loops(type(root).forward) or not any(_steps_in_time(m) for m in root.modules()
                                                 if m is not root):
        return None
    return GraphError(f"{type(root).__name__}.forward loops over time steps around stateful "
                      f"layers; polyir exports one time step, not the loop (the unrolled loop "
                      f"failed: {exc.reason})", node=exc.node, field="model",
                      fix="export the one-step module (forward(x, state) -> (y, state)); "
                          "polyir.to_torch(g).run(sequence) and polyir.compile(g).run(...) run "
                          f"the time loop. For example:\n{_ONE_STEP_EXAMPLE}")


def trace_refusal(root: nn.Module, exc: Exception, where: str, after: str,
                  last_node: str | None) -> GraphError:
    """The GraphError for a model torch.fx cannot trace."""
    head = (f"torch.fx cannot trace {type(root).__name__}{where}{after}: "
            f"{type(exc).__name__}: {exc}")
    if _loops(type(root).forward):
        return GraphError(f"{head}. {type(root).__name__}.forward loops (over time steps, "
                          "presumably); polyir exports one time step, not the loop",
                          node=last_node, field="model",
                          fix="export the one-step module (forward(x, state) -> (y, state)); "
                              "polyir.to_torch(g).run(sequence) and polyir.compile(g).run(...) "
                              f"run the time loop. For example:\n{_ONE_STEP_EXAMPLE}")
    return GraphError(head, node=last_node, field="model",
                      fix="remove data-dependent Python control flow from forward (if/for on "
                          "tensor values), or make the offending submodule an fx leaf by "
                          "registering a handler: @polyir.exporters.handler(ThatModule)")
