"""Train a logic-gate network, export it, and use it from C.

A difflogic-style network (Binarize -> LogicLayer -> LogicLayer -> GroupSum, from polyir.nn) is
trained on scikit-learn's bundled 8x8 digits (no download), exported to model.h5, written as C and
a header by `polyir codegen` (symbols prefixed `digits_`), and compiled together with the tiny
examples/logic_in_c/main.c into a program `classify`. Its predictions are the torch model's eval-mode predictions, exactly.

    python examples/logic_in_c.py [--epochs 10] [--out folder]
"""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

import polyir
from polyir import nn as pnn

HERE = Path(__file__).resolve().parent


def train(epochs: int, width: int = 400):
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    x = torch.from_numpy(digits.data[order].astype(np.float32))
    y = torch.from_numpy(digits.target[order])
    x_train, y_train, x_test, y_test = x[:1347], y[:1347], x[1347:], y[1347:]
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        pnn.Binarize(torch.tensor([2.0, 6.0, 10.0, 14.0])),        # 64 pixels -> 256 bits
        pnn.LogicLayer(256, width, connections="unique", seed=0),
        pnn.LogicLayer(width, width, connections="unique", seed=1),
        pnn.GroupSum(10, tau=width / 100))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y_train)).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
    return model.eval(), x_test, y_test


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument("--out", default="logic_in_c", help="folder for the files it writes")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model, x_test, y_test = train(args.epochs)
    with torch.no_grad():
        want = model(x_test).argmax(-1).numpy()
    print(f"trained: test accuracy {np.mean(want == y_test.numpy()):.3f}")

    polyir.save(polyir.export(model, x_test[:1]), out / "model.h5")
    subprocess.run([sys.executable, "-m", "polyir.cli", "codegen", str(out / "model.h5"),
                    "-o", str(out / "model.c"), "--header", str(out / "model.h"),
                    "--prefix", "digits_"], check=True)
    shutil.copy(HERE / "logic_in_c" / "main.c", out / "main.c")
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-Wno-psabi", "-o", str(out / "classify"), str(out / "main.c"),
                    str(out / "model.c"), "-lm", "-pthread"], check=True)

    x_test.numpy().astype(np.float32).tofile(out / "digits.f32")
    result = subprocess.run([str(out / "classify"), str(out / "digits.f32"), str(len(y_test))],
                            check=True, capture_output=True, text=True)
    got = np.array(result.stdout.split(), dtype=np.int64)
    assert np.array_equal(got, want), "the C program and torch disagree"
    print(f"C program {out / 'classify'}: {len(got)} predictions, identical to torch's "
          f"(accuracy {np.mean(got == y_test.numpy()):.3f})")


if __name__ == "__main__":
    main()
