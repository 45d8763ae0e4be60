"""A zoo of everyday models, each trained a few steps, exported, saved, loaded, and run by the torch
importer and the C backend (and heyoka where the model is stateless and smooth): the outputs
agree with the torch model's eval-mode outputs within 1e-5 (float32), and the imported module
keeps training (its loss falls). The models are tiny on purpose; the comparison is with the torch
model itself, an independent computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import polyir

TOL = 1e-5


class LeNetBN(nn.Module):
    """LeNet with BatchNorm and max pooling (1 x 12 x 12 images)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + x)


class SmallResNet(nn.Module):
    """A stem, two residual blocks, global average pooling (1 x 8 x 8 images)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                                  nn.ReLU(), nn.MaxPool2d(2))
        self.blocks = nn.Sequential(Block(4), Block(4))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def vgg_block(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


def vgg():
    """Two VGG-style blocks and a classifier with dropout (1 x 8 x 8 images)."""
    return nn.Sequential(vgg_block(1, 4), vgg_block(4, 6), nn.Flatten(), nn.Linear(24, 12),
                         nn.ReLU(), nn.Dropout(0.2), nn.Linear(12, 3))


def mlp():
    """An MLP with LayerNorm and a softmax output (6 features)."""
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 16),
                         nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 3), nn.Softmax(dim=1))


class TwoBranch(nn.Module):
    """Two branches joined by torch.cat (6 features)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Linear(6, 5), nn.Tanh())
        self.b = nn.Sequential(nn.Linear(6, 3), nn.Sigmoid(), nn.Linear(3, 3, bias=False))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x) - 0.5], dim=1))


# name -> (model factory, input shape, output is probabilities, heyoka can run it)
ZOO = {
    "lenet_bn": (LeNetBN, (1, 12, 12), False, False),
    "small_resnet": (SmallResNet, (1, 8, 8), False, False),
    "vgg": (vgg, (1, 8, 8), False, False),
    "mlp_layernorm_softmax": (mlp, (6,), True, True),
    "two_branch_cat": (TwoBranch, (6,), False, True),
}


def data(shape, seed, n=48):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n,) + shape, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def loss_of(out, y, probabilities):
    return F.nll_loss(torch.log(out + 1e-7), y) if probabilities else F.cross_entropy(out, y)


def train(model, x, y, probabilities, steps, lr=1e-2):
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(model(x), y, probabilities)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_round_trips_and_keeps_training(name, tmp_path):
    factory, shape, probabilities, smooth = ZOO[name]
    torch.manual_seed(0)
    model = factory()
    x, y = data(shape, 1)
    train(model, x, y, probabilities, steps=4)  # BatchNorm statistics move off their defaults
    model.eval()
    g = polyir.export(model, x[:2])
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        assert "ChannelAffine" not in {type(k).__name__ for k in g.nodes.values()}
        assert any("folded_batchnorm" in k.metadata for k in g.nodes.values())
    polyir.save(g, tmp_path / f"{name}.h5")
    loaded = polyir.load(tmp_path / f"{name}.h5")
    with torch.no_grad():
        want = model(x)
        imported = polyir.to_torch(loaded).eval()
        got = imported(x)
    assert (got - want).abs().max().item() <= TOL, "to_torch"
    c_out = polyir.compile(loaded, "c")(x.numpy())
    assert np.abs(c_out - want.numpy()).max() <= TOL, "C"
    if smooth:
        h_out = polyir.compile(loaded, "heyoka")(x.numpy().astype(np.float64))
        assert np.abs(h_out - want.numpy()).max() <= TOL, "heyoka"
    losses = train(imported, x, y, probabilities, steps=8)
    assert losses[-1] < losses[0], losses


# --- the CUDA backend: its kernel emulated on the host with g++, and compiled by nvcc -------------
def exported(name):
    factory, shape, probabilities, _ = ZOO[name]
    torch.manual_seed(0)
    model = factory()
    x, y = data(shape, 1)
    train(model, x, y, probabilities, steps=2)
    model.eval()
    return model, polyir.export(model, x[:2]), x


@pytest.mark.parametrize("name", ["small_resnet", "mlp_layernorm_softmax", "two_branch_cat"])
def test_zoo_model_on_the_emulated_cuda_kernel(name, tmp_path):
    from test_backend_cuda import GXX, Emulated
    if GXX is None:
        pytest.skip("g++ not on PATH")
    model, g, x = exported(name)
    got = Emulated(g, tmp_path)(x.numpy())[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() <= TOL


class EveryKind(nn.Module):
    """One model holding every everyday kind (for compiling the generated CUDA source)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(12, 6)

    def forward(self, x):
        h = F.max_pool2d(self.bn(F.relu(self.conv(x))), 2, padding=1)   # ChannelAffine, MaxPool2d
        h = torch.flatten(F.adaptive_avg_pool2d(h, (2, 2)), 1)            # AdaptiveAvgPool2d
        h = self.fc(h)
        p = F.max_pool1d(torch.stack([h, h * h], 1), 2).flatten(1)       # Concat, Binary, MaxPool1d
        h = torch.cat([h / (p + 2.0), torch.clamp(h, -1, 2)], 1)         # Clamp
        return F.log_softmax(h, 1)                                        # Softmax


def test_nvcc_compiles_every_everyday_kind(tmp_path):
    import shutil
    import subprocess

    from polyir.backends import cuda
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not on PATH")
    model = nn.Sequential(EveryKind(), nn.LayerNorm(12)).eval()
    g = polyir.export(model, torch.randn(2, 1, 9, 9))
    kinds = {type(k).__name__ for k in g.nodes.values()}
    from polyir.ir.kinds.cnn import CNN_KINDS
    assert set(CNN_KINDS) <= kinds
    f = tmp_path / "m.cu"
    f.write_text(cuda.codegen(g))
    r = subprocess.run([nvcc, "--ptx", "-arch=sm_90", "--std=c++17", "-Werror", "all-warnings",
                        str(f), "-o", str(tmp_path / "m.ptx")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_everyday_kind_on_c_and_the_emulated_cuda_kernel(tmp_path):
    from test_backend_cuda import GXX, Emulated
    torch.manual_seed(5)
    model = nn.Sequential(EveryKind(), nn.LayerNorm(12)).eval()
    x = torch.randn(70, 1, 9, 9)
    g = polyir.export(model, x[:2])
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(polyir.compile(g, "c")(x.numpy()) - want).max() <= TOL
    if GXX is not None:
        assert np.abs(Emulated(g, tmp_path)(x.numpy())[0] - want).max() <= TOL
