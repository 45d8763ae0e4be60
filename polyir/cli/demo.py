"""`polyir demo`: a small torch model of each family is exported, saved, loaded, checked and
printed as a table; then the later steps of polyir/cli/demo_steps.py run (training a logic-gate
network and bringing it back)."""
from __future__ import annotations

import os
import tempfile

from ..ir.h5 import load, save
from .registry import arguments, command
from .tables import print_graph


def family_models(seed: int = 0) -> dict:
    """family -> (torch model, example input): one small model of each family of kinds, written
    with torch.nn and polyir.nn as a user would."""
    import torch
    from torch import nn

    from .. import nn as pnn
    from ..nn.rule_builder import R, Template
    from ..nn.rules import RuleLayer

    class SpikingNet(nn.Module):
        """Linear -> LIF -> Linear -> LI, threading the neurons' state through forward."""

        def __init__(self):
            super().__init__()
            self.fc, self.out = nn.Linear(3, 5), nn.Linear(5, 2)
            self.lif = pnn.LIF(tau=torch.full((5,), 1e-2), r=torch.ones(5), v_leak=torch.zeros(5),
                               v_threshold=torch.ones(5), dt=1e-3)
            self.li = pnn.LI(tau=torch.full((2,), 2e-2), r=torch.ones(2), v_leak=torch.zeros(2),
                             dt=1e-3)

        def forward(self, x, state=None):
            s_lif, s_li = state if state is not None else (None, None)
            z, s_lif = self.lif(self.fc(x), s_lif)
            y, s_li = self.li(self.out(z), s_li)
            return y, (s_lif, s_li)

    torch.manual_seed(seed)
    return {
        "ffnn": (nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1), nn.Sigmoid()),
                 torch.randn(2, 4)),
        "cnn": (nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                              nn.Flatten(), nn.Linear(4 * 4 * 4, 3)), torch.randn(2, 1, 8, 8)),
        "logic": (nn.Sequential(pnn.Binarize(torch.tensor([0.25, 0.5, 0.75])),
                                pnn.LogicLayer(15, 24, seed=seed), pnn.LogicLayer(24, 12, seed=seed),
                                pnn.GroupSum(3, tau=2.0)), torch.rand(2, 5)),
        "logic_conv": (nn.Sequential(pnn.LogicTree2d(2, 4, 2, 3, seed=seed),
                                     pnn.OrPool2d(2, 2), nn.Flatten(),
                                     pnn.LogicLayer(36, 10, seed=seed), pnn.GroupSum(2)),
                       torch.randint(0, 2, (2, 2, 8, 8)).float()),
        "leaky_integrators": (SpikingNet(), torch.randn(2, 3)),
        "rules": (nn.Sequential(nn.Linear(2, 8), nn.Tanh(),
                                RuleLayer(Template([R.xor[1, 8] <= R.xy])), nn.Tanh()),
                  torch.randn(2, 2)),
    }


def run_families(folder: str) -> int:
    """Export, save, load and print each family's model; 1 if a file does not read back equal."""
    from ..exporters.fx import export
    for family, (model, example) in family_models().items():
        graph = export(model.eval(), example)
        path = os.path.join(folder, f"{family}.h5")
        save(graph, path)
        back = load(path)
        same = back == graph
        print_graph(back, f"{family}: {path} ({os.path.getsize(path):,} bytes, "
                          f"round trip {'identical' if same else 'DIFFERS'})")
        if not same:
            return 1
    return 0


@command("demo", "export, save, load and check a small model of each family, then train a "
                 "logic-gate network and bring it back")
@arguments(lambda p: p.add_argument("--out", default=None,
                                    help="folder for the demo files (default: a new temporary "
                                         "folder)"))
def cmd_demo(args) -> int:
    folder = args.out or tempfile.mkdtemp(prefix="polyir-demo-")
    os.makedirs(folder, exist_ok=True)
    code = run_families(folder)
    if code:
        return code
    try:
        from . import demo_steps
    except ImportError:
        return 0
    return demo_steps.run(folder)
