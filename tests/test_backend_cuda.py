"""The CUDA backend without a GPU, and with one when present.

- The generated CUDA source compiles with nvcc (whenever nvcc is on PATH): a syntax or type error
  never waits for a GPU.
- The same kernel source, compiled as C++ with the host shim in polyir.backends.cuda (real threads
  per block meeting at a barrier for __syncthreads, blocks in turn, one grid-stride loop over
  tiles), runs on the CPU and must equal torch eval and the numpy references of
  tests/test_backend_c.py: bit for bit on logic graphs.
- Tests marked `gpu` run the real thing through CuPy; they skip without CuPy or a GPU.
"""
from __future__ import annotations

import ctypes
import dataclasses
import shutil
import subprocess

import numpy as np
import pytest

import polyir
from families import family_graphs
from polyir import ir
from polyir.backends import CompileError, cuda

from test_backend_c import (NEURONS, Ref, chain, check_spike_net, random_inputs, random_logic_net,
                            spike_net, spike_paths, spike_train)

F32 = np.float32
NVCC = shutil.which("nvcc")
GXX = shutil.which("g++")


def _has_gpu() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


HAVE_GPU = _has_gpu()
gpu = pytest.mark.gpu


def graphs():
    fams = family_graphs()
    rng = np.random.default_rng(21)
    out = {k: v for k, v in fams.items() if k != "rules"}
    out["random_logic"] = random_logic_net(rng, widths=(200, 130, 60))
    out["activations"] = chain(*[ir.Activation(fn) for fn in
                                 ("tanh", "softplus", "gelu", "elu", "silu", "sigmoid")],
                               input_shape=(5,))
    out["float64_mlp"] = chain(ir.Affine(rng.normal(size=(6, 3)), rng.normal(size=6)),
                               ir.Activation("tanh"), ir.Linear(rng.normal(size=(2, 6))))
    g = ir.Graph(metadata={"dt": 1e-3})
    g.add("x", ir.Input((3,)))
    g.add("fc", ir.Affine(rng.normal(size=(4, 3)).astype(F32), np.zeros(4, F32)))
    g.add("cell", NEURONS["CubaLIF"](4, rng))
    g.add("y", ir.Output((4,)))
    for e in (("x", "fc"), ("fc", "cell"), ("cell", "y")):
        g.connect(*e)
    out["cubalif"] = g
    return out


GRAPHS = graphs()


# ---------------------------------------------------------------------------------------------
# nvcc
# ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("name,options", [("logic", {}), ("logic_conv", {"word_bits": 32}),
                                          ("cnn", {}), ("leaky_integrators", {}),
                                          ("float64_mlp", {}), ("activations", {}),
                                          ("spike_net", {}), ("logic_tree_large", {})])
def test_nvcc_compiles_generated_source(tmp_path, name, options):
    graph = {"spike_net": lambda: spike_net(30, 70, 5, np.random.default_rng(1)),
             "logic_tree_large": lambda: _logic_tree_net(np.random.default_rng(2))}.get(
                 name, lambda: GRAPHS[name])()
    src = cuda.codegen(graph, **options)
    assert 'extern "C" __global__ void polyir_kernel' in src
    f = tmp_path / "model.cu"
    f.write_text(src)
    r = subprocess.run([NVCC, "--ptx", "-arch=sm_90", "--std=c++17", "--fmad=false", "-Werror",
                        "all-warnings", str(f), "-o", str(tmp_path / "model.ptx")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert ".entry polyir_kernel" in (tmp_path / "model.ptx").read_text()


# ---------------------------------------------------------------------------------------------
# emulation: the kernel as C++ on the host
# ---------------------------------------------------------------------------------------------

class Emulated:
    """Builds the kernel with the host shim and runs it like a launch."""

    def __init__(self, graph, tmp_path, grid=2, block=8, **options):
        program, renderer, src = cuda.render(graph, **options)
        self.program, self.renderer, self.grid, self.block = program, renderer, grid, block
        self.dtype = np.float64 if program.dtype == "float64" else F32
        f = tmp_path / "emu.cpp"
        f.write_text(cuda.emulator_source(src, renderer.ws_bytes if renderer.use_smem else 8))
        so = tmp_path / "emu.so"
        r = subprocess.run([GXX, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread",
                            "-Wno-unused", str(f), "-o", str(so)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[:4000]
        self.lib = ctypes.CDLL(str(so))
        self.fn = self.lib.polyir_emulate
        self.fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong,
                            ctypes.c_longlong, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                            ctypes.c_int]
        self.source, self.tables = src, list(renderer.tables)  # the kernel reads them in place
        self.tab = (ctypes.c_void_p * max(1, len(self.tables)))(
            *[a.ctypes.data for a in self.tables])

    def __call__(self, *xs, steps=1):
        batch = xs[0].shape[1] if steps > 1 or self.program.stateful else xs[0].shape[0]
        arrays = []
        for x, spec in zip(xs, self.program.inputs):
            arrays.append(np.ascontiguousarray(x != 0, np.uint8) if spec.elem == "bit"
                          else np.ascontiguousarray(x, self.dtype))
        lead = (steps, batch) if self.program.stateful else (batch,)
        outs = [np.full(lead + tuple(o.shape), np.nan, self.dtype) for o in self.program.outputs]
        ws = np.zeros(max(1, self.grid * self.renderer.ws_bytes), np.uint8)
        ins = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
        outp = (ctypes.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
        self.fn(ins, outp, steps, batch, ws.ctypes.data, self.tab, self.grid, self.block)
        return outs


def _compare(got, want, exact, rtol=1e-5, atol=1e-5):
    for g_, w_ in zip(got, want):
        assert g_.shape == w_.shape
        if exact:
            np.testing.assert_array_equal(g_, w_)
        else:
            np.testing.assert_allclose(g_, w_, rtol=rtol, atol=atol)


LOGIC = {"logic", "logic_conv", "random_logic"}


@pytest.mark.skipif(GXX is None, reason="g++ not on PATH")
@pytest.mark.parametrize("name", sorted(set(GRAPHS) - {"leaky_integrators", "cubalif"}))
def test_emulated_kernel_matches_torch_and_numpy(tmp_path, name):
    g = GRAPHS[name]
    emu = Emulated(g, tmp_path, word_bits=32 if name == "logic_conv" else 64)
    rng = np.random.default_rng(5)
    xs = random_inputs(g, 600, rng)  # 3 tiles of 256 on a grid of 2 blocks: the stride loop
    got = emu(*xs)
    exact = name in LOGIC
    _compare(got, Ref(g)(*xs), exact)
    t = polyir.compile(g, "torch")(*xs)
    _compare(got, list(t) if isinstance(t, tuple) else [t], exact)


@pytest.mark.skipif(GXX is None, reason="g++ not on PATH")
@pytest.mark.parametrize("name", ["leaky_integrators", "cubalif"])
def test_emulated_fused_time_loop(tmp_path, name):
    g = GRAPHS[name]
    emu = Emulated(g, tmp_path, grid=1, block=5)
    rng = np.random.default_rng(6)
    seq = (100 * rng.normal(size=(25, 300, 3))).astype(F32)
    got = emu(seq, steps=25)[0]
    want = polyir.compile(g, "torch").run(seq)
    if name == "cubalif":  # spikes: equal up to a rare float rounding flip
        assert np.mean(got != want) < 0.01 and got.sum() > 0
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, Ref(g).sequence(seq)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(GXX is None, reason="g++ not on PATH")
@pytest.mark.parametrize("options", [{"reset_mode": "none"},
                                     {"reset_mode": "subtract_pending_in_test"},
                                     {"reset_mode": "v_reset_after_update", "reset_delay": True}])
def test_emulated_reset_modes(tmp_path, options):
    """The kernel's reset modes against polyir's torch layer (itself checked against numpy loops
    in the golden cases) over a fused time loop."""
    g = GRAPHS["cubalif"]
    cell = dataclasses.replace(g.nodes["cell"], **options)
    g = ir.Graph.sequential(g.nodes["fc"], cell, input_shape=(3,), metadata=g.metadata)
    emu = Emulated(g, tmp_path, grid=1, block=5)
    seq = (100 * np.random.default_rng(7).normal(size=(25, 300, 3))).astype(F32)
    got = emu(seq, steps=25)[0]
    want = polyir.compile(g, "torch").run(seq)
    assert np.mean(got != want) < 0.01 and 0 < got.sum() < got.size  # rare float flips


@pytest.mark.skipif(GXX is None, reason="g++ not on PATH")
def test_emulated_global_workspace_and_block_sizes(tmp_path):
    """A workspace too big for shared memory goes to global memory (one slice per block); any
    block size gives the same bits as the C backend."""
    g = random_logic_net(np.random.default_rng(3), widths=(300, 200))
    x = random_inputs(g, 700, np.random.default_rng(4))
    want = polyir.compile(g, "c")(*x)
    for grid, block, smem in ((1, 1, 0), (3, 7, 0), (2, 32, 1 << 16)):
        (tmp_path / f"{grid}_{block}").mkdir()
        emu = Emulated(g, tmp_path / f"{grid}_{block}", grid=grid, block=block, smem_bytes=smem)
        assert emu.renderer.use_smem == (smem > 0)
        np.testing.assert_array_equal(emu(*x)[0], want)


@pytest.mark.skipif(GXX is None, reason="g++ not on PATH")
def test_emulated_spike_fed_affines_add_active_rows(tmp_path):
    """As in C: Affines fed by spikes (or by a spike-train Input) add only the weight rows of
    non-zero inputs. Values equal numpy's mat-vec (float32 sums in another order: 1e-5 of the
    absolute sum), spikes the torch import's; 300 samples on a grid of 2 blocks of 32 threads
    leave padding in the last tile. An Affine holding an inf weight keeps the dense sum, so that
    a zero input still gives 0 * inf = NaN."""
    rng = np.random.default_rng(17)
    g = spike_net(30, 70, 5, rng)
    emu = Emulated(g, tmp_path, grid=2, block=32)
    assert spike_paths(emu) == [True, True], "both Affines should take the spike path"
    seq = spike_train(rng, 25, 300, 30)
    check_spike_net(g, seq, emu(seq, steps=25))

    w1 = rng.normal(size=(6, 4)).astype(F32)
    w1[2, 1] = np.inf
    g = spike_net(4, 6, 3, rng, w1=w1)
    (tmp_path / "inf").mkdir()
    emu = Emulated(g, tmp_path / "inf", grid=1, block=8, tile=64)  # a small batch's tile
    assert spike_paths(emu) == [False, True], "only the finite Linear takes the spike path"
    seq = np.zeros((2, 5, 4), F32)
    seq[:, :, 0] = 1.0
    fc1 = emu(seq, steps=2)[0]
    assert np.isnan(fc1[:, :, 2]).all()
    np.testing.assert_allclose(fc1[:, :, 0], np.broadcast_to(w1[0, 0] + g.nodes["fc1"].bias[0],
                                                             (2, 5)), rtol=1e-6)


def test_the_tile_follows_the_batch():
    """Every SM gets two blocks where the batch allows: small batches run in narrow tiles (one
    word at the least), large ones in the widest."""
    assert cuda.tile_for(64, 132, 64, 256) == 64
    assert cuda.tile_for(40_000, 132, 64, 256) == 128      # 313 blocks for 132 SMs
    assert cuda.tile_for(1_000_000, 132, 64, 256) == 256
    assert cuda.tile_for(1_000_000, 132, 32, 64) == 64     # never past the widest asked for
    assert cuda.tile_for(100, 1, 32, 256) == 32


def _logic_tree_net(rng):
    """A conv logic net whose tables exceed the 4,096 values written into source: 16 kernels
    of 4 leaves at 16 x 16 positions (16,384 leaves), then 2,000 gates (6,000 indices)."""
    k = 16
    leaves = np.stack([rng.integers(0, 2, (k, 4)), rng.integers(0, 3, (k, 4)),
                       rng.integers(0, 3, (k, 4))], -1)
    return chain(ir.LogicTree2d(leaves, rng.integers(0, 16, (k, 3)), (3, 3)),
                 ir.Flatten(start_dim=0),
                 ir.LogicLayer(rng.integers(0, k * 256, 2000), rng.integers(0, k * 256, 2000),
                               rng.integers(0, 16, 2000)),
                 ir.LogicLayer(rng.integers(0, 2000, 300), rng.integers(0, 2000, 300),
                               rng.integers(0, 16, 300)),
                 ir.GroupSum(3), input_shape=(2, 18, 18), elem="bit")


@pytest.mark.skipif(GXX is None, reason="g++ not on PATH")
def test_emulated_large_tables_are_data_and_copies_are_bypassed(tmp_path):
    """Tables over 4,096 values reach the kernel as data (`tab`), not source literals, so the
    source stays small whatever the model; pass-through gates are bypassed as in C (a logic op
    then reads several buffers). The bits equal the numpy reference and the C backend's."""
    rng = np.random.default_rng(23)
    g = _logic_tree_net(rng)
    emu = Emulated(g, tmp_path, grid=2, block=16)
    sizes = sorted(a.size for a in emu.tables)
    assert sizes and sizes[-1] >= 16384, "the tree's leaves should travel as data"
    assert len(emu.source) < 60_000, "no large literal tables in the source"
    logic = [op for op in emu.program.ops if op.op == "logic"]
    assert any(len(op.ins) > 1 for op in logic), "a copy gate should have been read around"
    assert sum(op.consts["gate"].size for op in logic) < 2300
    x = random_inputs(g, 300, np.random.default_rng(24))
    got = emu(*x)[0]
    np.testing.assert_array_equal(got, Ref(g)(*x)[0].astype(F32))
    np.testing.assert_array_equal(got, polyir.compile(g, "c")(*x))


# ---------------------------------------------------------------------------------------------
# errors without a GPU, and the real thing with one
# ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(HAVE_GPU, reason="a GPU is present")
def test_no_cupy_or_gpu_is_a_clear_error():
    with pytest.raises(CompileError, match="CuPy|GPU"):
        polyir.compile(GRAPHS["logic"], "cuda")


def test_ruleset_not_supported_by_cuda():
    with pytest.raises(polyir.GraphError, match="not supported by the CUDA backend"):
        cuda.codegen(family_graphs()["rules"])


@gpu
@pytest.mark.skipif(not HAVE_GPU, reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_gpu_matches_torch(name):
    g = GRAPHS[name]
    m = polyir.compile(g, "cuda")
    rng = np.random.default_rng(8)
    if g.stateful:
        seq = (100 * rng.normal(size=(20, 300, 3))).astype(F32)
        got, want = m.run(seq), polyir.compile(g, "torch").run(seq)
        if name == "cubalif":
            assert np.mean(got != want) < 0.01
        else:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        return
    xs = random_inputs(g, 1000, rng)
    got, want = m(*xs), polyir.compile(g, "torch")(*xs)
    got = list(got) if isinstance(got, tuple) else [got]
    want = list(want) if isinstance(want, tuple) else [want]
    _compare(got, want, name in LOGIC, rtol=1e-4, atol=1e-5)


@gpu
@pytest.mark.skipif(not HAVE_GPU, reason="needs CuPy and a CUDA GPU")
def test_gpu_spike_fed_affines_and_data_tables():
    """On the GPU: the spike-fed mat-vec against numpy (1e-5 of the absolute sum) and the torch
    import's spikes; a conv logic net whose tables travel as device buffers, with copy gates
    bypassed, bit for bit as the C backend."""
    rng = np.random.default_rng(19)
    g = spike_net(30, 70, 5, rng)
    m = polyir.compile(g, "cuda")
    assert spike_paths(m) == [True, True]
    seq = spike_train(rng, 25, 300, 30)
    check_spike_net(g, seq, m.run(seq), spike_mismatch=1e-3)  # GPU rounding: unverified here
    g = _logic_tree_net(np.random.default_rng(23))
    m = polyir.compile(g, "cuda")
    assert m.tables and max(a.size for a in m.tables) >= 16384
    x = random_inputs(g, 1000, np.random.default_rng(24))
    np.testing.assert_array_equal(m(*x), polyir.compile(g, "c")(*x))


@gpu
@pytest.mark.skipif(not HAVE_GPU, reason="needs CuPy and a CUDA GPU")
def test_gpu_cupy_in_cupy_out():
    import cupy
    g = GRAPHS["random_logic"]
    m = polyir.compile(g, "cuda")
    x = random_inputs(g, 2000, np.random.default_rng(9))[0]
    y = m(cupy.asarray(x))
    assert isinstance(y, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(y), polyir.compile(g, "c")(x))
