"""Every node kind, one frozen dataclass each, entered in the closed registry `KINDS`."""
from .base import KINDS, Kind, kind
from .cnn import (BINARY_FNS, CNN_KINDS, AdaptiveAvgPool2d, Binary, ChannelAffine, Clamp, Concat,
                  LayerNorm, MaxPool1d, MaxPool2d, Softmax)
from .ffnn import ACTIVATIONS, SOFTPLUS_THRESHOLD, Activation
from .logic import (GATE_COEFFS, GATE_NAMES, GATE_TABLE, Binarize, GroupSum, LogicLayer,
                    LogicTree2d, OrPool2d)
from .neurons import (DISCRETIZATIONS, IF, LI, LIF, NEURONS, CubaLI, CubaLIF, I, Neuron,
                      SpikingNeuron)
from .nir import (NIR_KINDS, Affine, AvgPool2d, Conv1d, Conv2d, Delay, Flatten, Input, Linear,
                  Output, Scale, SumPool2d, Threshold)
from .rules import Fact, Literal, Predicate, Query, Rule, RuleSet

__all__ = ["KINDS", "Kind", "kind", "ACTIVATIONS", "SOFTPLUS_THRESHOLD", "Activation",
           "GATE_COEFFS", "GATE_NAMES", "GATE_TABLE", "Binarize", "GroupSum", "LogicLayer", "LogicTree2d", "OrPool2d", "IF",
           "LI", "LIF", "NIR_KINDS", "Affine", "AvgPool2d", "Conv1d", "Conv2d", "CubaLI", "CubaLIF",
           "Delay", "Flatten", "I", "Input", "Linear", "Output", "Scale", "SumPool2d", "Threshold",
           "Fact", "Literal", "Predicate", "Query", "Rule", "RuleSet", "BINARY_FNS", "CNN_KINDS",
           "AdaptiveAvgPool2d", "Binary", "ChannelAffine", "Clamp", "Concat", "LayerNorm",
           "MaxPool1d", "MaxPool2d", "Softmax", "DISCRETIZATIONS", "NEURONS",
           "Neuron", "SpikingNeuron"]
