"""Time loops of 2-layer LIF nets (n_in -> n_hidden LIF -> n_out LIF), T steps, Bernoulli(p)
input spikes, one thread: polyir's C backend against polyir's torch import, snnTorch and Norse
(when installed), alternated A, B, C, ..., A, B, C, ... in one run.

Reported per contender: the best and median per-core CPU seconds (time.process_time: the machine
is shared, so wall time includes waiting for a core) and wall seconds; the C backend's spikes are
checked against the torch import's on the same input (identical, or the fraction that differs).
snnTorch and Norse run nets of the same sizes and the same neurons up to float
rounding (snnTorch's Leaky, beta = 1 - dt/tau, reset to zero; Norse's LIFBoxCell with the weights
times r), for timing: their spike rates are printed, their spikes are not compared.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/snn_timeloop.py [--steps 1000] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402

import polyir  # noqa: E402
from polyir import ir  # noqa: E402

F32 = np.float32
DT, TAU, THRESHOLD = 1e-3, 2e-2, 1.0
GAIN = TAU / DT  # r: an input adds r * dt / tau = 1 x its value per step, as in snnTorch's Leaky
SIZES = ((700, 512, 20, 64), (700, 512, 20, 256), (100, 256, 10, 64))


def lif_net(n_in, n_hidden, n_out, seed=0):
    rng = np.random.default_rng(seed)
    g = ir.Graph(metadata={"dt": DT})
    g.add("x", ir.Input((n_in,)))
    for k, (a, b) in enumerate(((n_in, n_hidden), (n_hidden, n_out)), 1):
        w = (rng.normal(size=(b, a)) * (3.0 / np.sqrt(a))).astype(F32)
        g.add(f"fc{k}", ir.Affine(w, np.zeros(b, F32)))
        g.add(f"lif{k}", ir.LIF(tau=np.full(b, TAU, F32), r=np.full(b, GAIN, F32),
                                v_leak=np.zeros(b, F32), v_threshold=np.full(b, THRESHOLD, F32)))
    g.add("y", ir.Output((n_out,)))
    for e in (("x", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "y")):
        g.connect(*e)
    return g


def stepped(fcs, cells, first_states):
    """A time loop over Linear -> cell pairs whose cells are called cell(x, state) ->
    (spikes, state), as snnTorch's and Norse's are."""
    def run(x):
        with torch.no_grad():
            states, ys = first_states(), []
            for h in x:
                for k, (fc, cell) in enumerate(zip(fcs, cells)):
                    h, states[k] = cell(fc(h), states[k])
                ys.append(h)
            return torch.stack(ys)
    return run


def library_contenders(g):
    """snnTorch and Norse nets of the same sizes and weights, when installed."""
    out = {}
    layers = [(torch.tensor(g.nodes[f"fc{k}"].weight), torch.tensor(g.nodes[f"fc{k}"].bias))
              for k in (1, 2)]

    def linear(w, b):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        return lin

    try:
        import snntorch as snn
        cells = [snn.Leaky(beta=1 - DT / TAU, threshold=THRESHOLD, reset_mechanism="zero")
                 for _ in layers]
        out["snntorch"] = stepped([linear(w, b) for w, b in layers], cells,
                                  lambda: [c.init_leaky() for c in cells])
    except ImportError:
        pass
    try:
        from norse.torch import LIFBoxCell, LIFBoxParameters
        p = LIFBoxParameters(tau_mem_inv=torch.tensor(1 / TAU), v_th=torch.tensor(THRESHOLD))
        out["norse"] = stepped([linear(w * GAIN, b * GAIN) for w, b in layers],  # Norse has no r
                               [LIFBoxCell(p, dt=DT) for _ in layers], lambda: [None, None])
    except ImportError:
        pass
    return out


def timed(fn, x):
    c0, w0 = time.process_time(), time.perf_counter()
    y = fn(x)
    return time.process_time() - c0, time.perf_counter() - w0, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000, help="time steps T")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of the alternation")
    ap.add_argument("--p", type=float, default=0.1, help="input spike probability")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"one thread (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, torch threads "
          f"{torch.get_num_threads()}); T={args.steps}, Bernoulli({args.p}) inputs; the machine "
          "is shared with other jobs: per-core CPU seconds are the figure to compare")
    for n_in, n_hidden, n_out, batch in SIZES:
        g = lif_net(n_in, n_hidden, n_out)
        rng = np.random.default_rng(1)
        x = (rng.random((args.steps, batch, n_in)) < args.p).astype(F32)
        xt = torch.from_numpy(x)
        c0 = time.perf_counter()
        compiled = {f"polyir C w{wb}": polyir.compile(g, "c", threads=1, word_bits=wb)
                    for wb in (64, 256)}
        compile_s = time.perf_counter() - c0
        torch_run = polyir.compile(g, "torch")
        contenders = dict(compiled)
        contenders["polyir torch import"] = torch_run.run
        contenders.update({k: (lambda f: lambda _x: f(xt))(f)
                           for k, f in library_contenders(g).items()})
        times = {k: [] for k in contenders}
        outs = {}
        for _ in range(args.repeat):
            for name, fn in contenders.items():
                cpu, wall, y = timed(fn if not name.startswith("polyir C") else fn.run, x)
                times[name].append((cpu, wall))
                outs[name] = np.asarray(y)
        print(f"\n{n_in}-{n_hidden}-{n_out}, batch {batch}, T={args.steps} (C compile, both "
              f"widths: {compile_s:.1f} s wall)")
        ref = outs["polyir torch import"]
        for name, ts in times.items():
            cpus, walls = [t[0] for t in ts], [t[1] for t in ts]
            note = ""
            if name.startswith("polyir C"):
                diff = float(np.mean(outs[name] != ref))
                note = "spikes = torch import" if diff == 0 else f"spikes differ at {diff:.2e}"
            elif name in ("snntorch", "norse"):
                note = f"{outs[name].mean():.3f} output spikes/neuron/step"
            print(f"  {name:22s} cpu best {min(cpus):7.3f} s  median {statistics.median(cpus):7.3f}"
                  f" s | wall best {min(walls):7.3f} s  {note}")
        print(f"  (torch import: {ref.mean():.3f} output spikes/neuron/step)")
        best = {name: min(t[0] for t in ts) for name, ts in times.items()}
        c_best = min(v for k, v in best.items() if k.startswith("polyir C"))
        others = {k: v for k, v in best.items() if not k.startswith("polyir C")}
        fastest = min(others, key=others.get)
        print(f"  C (best width) vs the fastest other, {fastest}: {others[fastest] / c_best:.1f}x "
              "fewer CPU seconds")
    print(f"\nuptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
