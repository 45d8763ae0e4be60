"""Trainable torch layers that realise polyir's node kinds.

Logic layers (relaxed in train mode, hard gates in eval mode): LogicLayer, LogicTree2d, OrPool2d,
Binarize, GroupSum. Neurons with an explicit dt, `forward(x, state=None) -> (y, state)`: I, IF, LI,
LIF, CubaLI, CubaLIF. Elementwise and small layers: Activation, Scale, Threshold, SumPool2d, Delay, and Conv1d /
Conv2d with zero padding per side.
Everyday CNN / MLP layers torch.nn lacks: ChannelAffine, Concat, Binary, Clamp.
RuleLayer (relational rules) lives in polyir.nn.rules and is imported on first use.
"""
from .cnn import Binary, ChannelAffine, Clamp, Concat
from .layers import Activation, Conv1d, Conv2d, Delay, Scale, SumPool2d, Threshold
from .logic import Binarize, GroupSum, LogicLayer, LogicTree2d, OrPool2d
from .neurons import IF, LAYERS, LI, LIF, CubaLI, CubaLIF, CubaState, I, Neuron, VState

__all__ = ["LogicLayer", "GroupSum", "Binarize", "LogicTree2d", "OrPool2d", "LI", "LIF", "CubaLI",
           "CubaLIF", "IF", "I", "Activation", "Scale", "Threshold", "SumPool2d", "Delay",
           "Conv1d", "Conv2d", "VState", "CubaState", "RuleLayer", "ChannelAffine", "Concat",
           "Binary", "Clamp", "Neuron", "LAYERS"]


def __getattr__(name):
    if name == "RuleLayer":  # owned by the rules layer; loaded lazily (it pulls in grounding)
        from .rules import RuleLayer
        return RuleLayer
    raise AttributeError(f"module 'polyir.nn' has no attribute {name!r}")
