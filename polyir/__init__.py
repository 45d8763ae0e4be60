"""polyir: one typed graph IR for PyTorch models of logic gates, group-sums, relational rules,
feed-forward layers and leaky-integrator neurons; exchanged as .h5 files, NIR graphs, torch
modules, heyoka expressions and compiled C / CUDA programs.

Importing polyir is cheap: torch, heyoka, nir and cupy load only when the function that needs them
is called.
"""
from .ir import (ACTIVATIONS, GATE_NAMES, IF, KINDS, LI, LIF, Activation, Affine, AvgPool2d,
                 Binarize, Conv1d, Conv2d, CubaLI, CubaLIF, Delay, Flatten, FormatError, Graph,
                 GraphError, GroupSum, I, Input, Linear, Literal, LogicLayer, LogicTree2d, OrPool2d,
                 Output, PolyirError, PolyirWarning, Port, Predicate, Query, Rule, RuleSet, Scale,
                 SumPool2d, Threshold)
from .ir import (AdaptiveAvgPool2d, Binary, ChannelAffine, Clamp, Concat, LayerNorm, MaxPool1d,
                 MaxPool2d, Softmax)
from .ir.h5 import FORMAT_VERSION, load, save

__version__ = "0.2.0"


def export(model, example_input, **kwargs) -> Graph:
    """torch.nn.Module -> Graph by torch.fx tracing (see polyir.exporters.fx)."""
    from .exporters.fx import export as _export
    return _export(model, example_input, **kwargs)


def to_torch(graph: Graph, **kwargs):
    """Graph -> trainable torch.nn.Module with the same outputs (see polyir.importers.torch)."""
    from .importers.torch import to_torch as _to_torch
    return _to_torch(graph, **kwargs)


def to_heyoka(graph: Graph, **kwargs):
    """Graph -> (heyoka expressions, input variables) (see polyir.importers.heyoka)."""
    from .importers.heyoka import to_heyoka as _to_heyoka
    return _to_heyoka(graph, **kwargs)


def to_heyoka_ode(graph: Graph, **kwargs):
    """Leaky-integrator graph -> heyoka ODE system (see polyir.importers.heyoka_ode)."""
    from .importers.heyoka_ode import to_heyoka_ode as _to_heyoka_ode
    return _to_heyoka_ode(graph, **kwargs)


def to_nir(graph: Graph):
    """Graph of NIR primitives -> nir.NIRGraph."""
    from .importers.nir import to_nir as _to_nir
    return _to_nir(graph)


def from_nir(nir_graph, **options) -> Graph:
    """nir.NIRGraph -> Graph (options: check=True; convention='snntorch'|'norse'|'sinabs'|
    'rockpool' reads the file as that library's exporter meant it)."""
    from .exporters.nir import from_nir as _from_nir
    return _from_nir(nir_graph, **options)


def nirtorch_maps(**options):
    """Maps for nirtorch users: {'nir_to_torch': node map, 'torch_to_nir': module map}
    (options: dt=, discretization=; see polyir.importers.nir)."""
    from .importers.nir import nirtorch_maps as _maps
    return _maps(**options)


def optimize(graph: Graph) -> Graph:
    """Graph -> an equivalent graph with fewer logic gates, bit-identical outputs (constants,
    pass-through and NOT folding, dead and duplicate gates; see polyir.ir.optimize)."""
    from .ir.optimize import optimize as _optimize
    return _optimize(graph)


def compile(graph: Graph, backend: str = "c", **options):  # noqa: A001 - the public name
    """Graph -> callable running on a backend: 'c' (generated C), 'cuda' (CuPy), 'heyoka',
    'torch'."""
    from .backends import compile as _compile
    return _compile(graph, backend, **options)


__all__ = ["ACTIVATIONS", "GATE_NAMES", "IF", "KINDS", "LI", "LIF", "Activation", "Affine",
           "AvgPool2d", "Binarize", "Conv1d", "Conv2d", "CubaLI", "CubaLIF", "Delay", "Flatten",
           "FormatError", "Graph", "GraphError", "GroupSum", "I", "Input", "Linear", "Literal",
           "LogicLayer", "LogicTree2d", "OrPool2d", "Output", "PolyirError", "PolyirWarning",
           "Port", "Predicate", "Query", "Rule", "RuleSet", "Scale", "SumPool2d", "Threshold",
           "FORMAT_VERSION", "load", "save", "export", "to_torch", "to_heyoka", "to_heyoka_ode",
           "to_nir", "from_nir", "nirtorch_maps", "optimize", "compile", "__version__",
           "AdaptiveAvgPool2d", "Binary", "ChannelAffine", "Clamp", "Concat", "LayerNorm",
           "MaxPool1d", "MaxPool2d", "Softmax"]
