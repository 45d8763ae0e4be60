"""The demo's later steps, run by `polyir demo` after the family tables.

`STEPS` is a list of step functions `step(folder, state) -> bool` (True: passed); `state` is a dict
the steps share (a later step reuses the trained model or the exported graph). Add a step by
appending to STEPS.

Step 1 trains a small logic-gate network (Binarize -> LogicLayer x 2 -> GroupSum, polyir.nn) on
scikit-learn's bundled digits (no download), exports it, saves, loads, imports it back into torch
and checks that the eval predictions are identical, printing the accuracy before and after.
Step 2 compiles that graph to C and checks that it predicts exactly what torch does.
"""
from __future__ import annotations

import os
import time

import numpy as np

__all__ = ["STEPS", "run", "train_logic_digits", "digits_data"]


def _console():
    from rich.console import Console
    return Console()


def digits_data(seed: int = 0):
    """scikit-learn's 8x8 digits (1797 samples, values 0..16), split 75/25, as float32 tensors."""
    import torch
    from sklearn.datasets import load_digits
    d = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(d.target))
    x = d.data[order].astype(np.float32)
    y = d.target[order].astype(np.int64)
    n_train = int(0.75 * len(y))
    t = torch.from_numpy
    return t(x[:n_train]), t(y[:n_train]), t(x[n_train:]), t(y[n_train:])


def logic_digits_model(width: int = 1200, seed: int = 0):
    import torch
    from torch import nn

    from .. import nn as pnn
    thresholds = torch.tensor([2.0, 6.0, 10.0, 14.0])  # 64 pixels x 4 levels -> 256 bits
    return nn.Sequential(
        pnn.Binarize(thresholds),
        pnn.LogicLayer(64 * 4, width, connections="unique", seed=seed),
        pnn.LogicLayer(width, width, connections="unique", seed=seed + 1),
        pnn.GroupSum(10, tau=width / 100))


def train_logic_digits(folder: str, state: dict, epochs: int = 15, seconds: float = 20.0,
                       width: int = 1200) -> bool:
    """Train (`epochs`, stopping early after `seconds`), export, save, load, to_torch; True when
    the eval predictions are identical."""
    import torch
    from rich.table import Table

    from ..exporters.fx import export
    from ..importers.torch import to_torch
    from ..ir.h5 import load, save

    torch.manual_seed(0)
    x_tr, y_tr, x_te, y_te = digits_data()
    model = logic_digits_model(width)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    start, done = time.perf_counter(), 0
    gen = torch.Generator().manual_seed(0)
    while done < epochs and time.perf_counter() - start < seconds:
        model.train()
        for idx in torch.randperm(len(y_tr), generator=gen).split(128):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
        done += 1
    train_s = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        before = model(x_te).argmax(-1)
    graph = export(model, x_te[:1])
    path = os.path.join(folder, "logic_digits.h5")
    save(graph, path)
    back = load(path)
    imported = to_torch(back).eval()
    with torch.no_grad():
        after = imported(x_te).argmax(-1)
    acc_before = float((before == y_te).float().mean())
    acc_after = float((after == y_te).float().mean())
    same = bool(torch.equal(before, after))
    state.update(model=model, graph=back, imported=imported, x_test=x_te, y_test=y_te)

    table = Table(title=f"logic net on digits: {done} epochs in {train_s:.1f} s, saved to "
                        f"{path} ({os.path.getsize(path):,} bytes)")
    for col in ("model", "test accuracy", "gates"):
        table.add_column(col)
    gates = sum(len(k.gate) for k in back.nodes.values() if hasattr(k, "gate"))
    table.add_row("trained (polyir.nn)", f"{acc_before:.3f}", f"{gates:,}")
    table.add_row("export -> save -> load -> to_torch", f"{acc_after:.3f}", f"{gates:,}")
    _console().print(table)
    _console().print(f"eval predictions identical after the round trip: "
                     f"{'yes' if same else 'NO'} ({len(y_te)} test samples)")
    return same


def _best_time(fn, repeat: int = 3):
    """(best wall seconds of `repeat` calls after one warm-up call, the last result)."""
    result = fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run_on_c(folder: str, state: dict) -> bool:
    """Compile the trained network to C (bit-sliced gates) and check that it predicts exactly
    what the re-imported torch module predicts; print both speeds."""
    import torch

    from ..backends import compile as compile_graph
    if "graph" not in state:
        return False
    x = state["x_test"].numpy()
    t0 = time.perf_counter()
    program = compile_graph(state["graph"], "c")
    compile_s = time.perf_counter() - t0
    with torch.no_grad():
        def on_torch():
            return state["imported"](state["x_test"]).argmax(-1).numpy()

        def on_c():
            return np.asarray(program(x)).argmax(-1)
        c_s, c_pred = _best_time(on_c)
        torch_s, torch_pred = _best_time(on_torch)
    same = bool(np.array_equal(c_pred, torch_pred))
    _console().print(f"generated C (compiled in {compile_s:.1f} s): {len(x)} samples in "
                     f"{c_s * 1e3:.2f} ms, torch eval {torch_s * 1e3:.2f} ms (best of 3 after a "
                     f"warm-up, wall time); predictions identical: {'yes' if same else 'NO'}")
    return same


#: the demo's steps, in order: step(folder, state) -> bool
STEPS = [train_logic_digits, run_on_c]


def run(folder: str) -> int:
    """Run every step; 0 when all pass, 1 otherwise (a failing step does not stop the others)."""
    state: dict = {}
    failed = []
    for step in STEPS:
        try:
            ok = step(folder, state)
        except Exception as exc:  # report and go on: the demo shows every step's outcome
            _console().print(f"[red]step {step.__name__} failed: {type(exc).__name__}: {exc}")
            ok = False
        if not ok:
            failed.append(step.__name__)
    if failed:
        _console().print(f"[red]failed steps: {', '.join(failed)}")
        return 1
    return 0
