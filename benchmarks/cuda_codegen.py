"""What the CUDA backend hands NVRTC, measured without a GPU: for each benchmark model the
kernel source's size, the data tables passed beside it, the gates left after the lowering, and
the CPU time of `nvcc --ptx` on the source (NVRTC runs the same front end when a program is
compiled for a GPU). Models: the random 784 -> 8000 x 6 -> GroupSum(10) logic net and the
LogicTreeNet-S-like conv net of benchmarks/logic_cpu.py, and the 700-512-20 LIF net of
benchmarks/snn_timeloop.py.

    python benchmarks/cuda_codegen.py [--repeat 2] [--arch sm_90]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from logic_cpu import conv_net, logic_net  # noqa: E402
from snn_timeloop import lif_net  # noqa: E402

from polyir.backends import cuda  # noqa: E402


def nvcc_seconds(nvcc: str, source: str, arch: str) -> tuple[float, float]:
    """(CPU seconds of the nvcc child processes, wall seconds) for one `nvcc --ptx`."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "model.cu")
        with open(src, "w") as f:
            f.write(source)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([nvcc, "--ptx", f"-arch={arch}", "--std=c++17", "--fmad=false", src, "-o",
                        os.path.join(d, "model.ptx")], check=True, capture_output=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2, help="nvcc runs per model (best is shown)")
    ap.add_argument("--arch", default="sm_90", help="nvcc -arch")
    args = ap.parse_args()
    nvcc = shutil.which("nvcc")
    print(f"load: {os.getloadavg()[0]:.1f} (1-minute average); nvcc: {nvcc or 'not found'}")
    models = {"logic 784-8000x6": logic_net(), "conv logic (LogicTreeNet-S-like)": conv_net(),
              "LIF 700-512-20": lif_net(700, 512, 20)}
    for name, g in models.items():
        program, renderer, source = cuda.render(g)
        tables = getattr(renderer, "tables", [])
        gates = sum(op.consts["gate"].size for op in program.ops if op.op == "logic")
        line = (f"{name}: source {len(source) / 1e3:,.0f} kB, data tables {len(tables)} "
                f"({sum(t.nbytes for t in tables) / 1e6:.2f} MB), gates {gates:,}")
        if nvcc:
            runs = [nvcc_seconds(nvcc, source, args.arch) for _ in range(args.repeat)]
            cpu, wall = min(r[0] for r in runs), min(r[1] for r in runs)
            line += f"; nvcc --ptx {cpu:.2f} s CPU, {wall:.2f} s wall (best of {args.repeat})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
