"""Compiled C programs that travel: pickling, Dask and Ray workers, several models in one binary, headers,
data tables for big parameters, bounded compile time, word width from the batch.

Expected values come from numpy written here (the gates spelled out, GroupSum as counts,
Binarize as comparisons), never from another polyir backend."""
import os
import pickle
import platform
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

import polyir
from polyir import ir
from polyir.backends import c

from logic_reference import GATES, random_logic_net

needs_cc = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                              reason="needs a C compiler")
pytestmark = needs_cc



def logic_graph(seed, n_in=32, widths=(96, 60), k=4, tau=2.0):
    return random_logic_net(seed, n_in, widths, k, tau)


def reference(graph, x):
    """numpy evaluation of a sequential Input(bit) -> LogicLayer... -> GroupSum graph."""
    v = x.astype(bool)
    for node in graph.nodes.values():
        if isinstance(node, ir.LogicLayer):
            v = np.stack([GATES[g](v[:, i], v[:, j]) for g, i, j in
                          zip(node.gate.tolist(), node.a.tolist(), node.b.tolist())], 1)
        elif isinstance(node, ir.GroupSum):
            v = ((v.reshape(len(v), node.k, -1).sum(-1) + node.beta) / node.tau)
    return v.astype(np.float32)


def bits(n, width, seed=0):
    return np.random.default_rng(seed).integers(0, 2, (n, width)).astype(np.uint8)


def test_pickled_program_rebuilds_and_agrees(tmp_path):
    g = logic_graph(0)
    m = polyir.compile(g, "c", cache_dir=tmp_path)
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.cache_hit  # rebuilt through the cache, not shipped as a library
    x = bits(300, 32)
    np.testing.assert_array_equal(m2(x), reference(g, x))
    assert b"ELF" not in pickle.dumps(m)


def _apply_program(block, program):
    return program(block)


def test_dask_distributed_map_blocks_on_two_worker_processes(tmp_path):
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    g = logic_graph(1)
    m = polyir.compile(g, "c", cache_dir=tmp_path)
    x = bits(2000, 32, seed=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        arr = da.from_array(x, chunks=(500, 32))
        y = arr.map_blocks(_apply_program, m, chunks=(500, 4), dtype=np.float32,
                           drop_axis=None).compute()
        workers = client.run(os.getpid)
    assert len(set(workers.values())) == 2
    np.testing.assert_array_equal(y, reference(g, x))


def test_ray_tasks_and_map_batches_run_shipped_programs(tmp_path):
    """A local Ray instance (2 CPUs): remote tasks get the compiled program pickled and rebuild it
    in worker processes; ray.data map_batches applies it to blocks of a dataset."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    g = logic_graph(6)
    m = polyir.compile(g, "c", cache_dir=tmp_path)
    x = bits(1200, 32, seed=7)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        run = ray.remote(lambda program, block: (program(block), os.getpid()))
        parts = ray.get([run.remote(m, x[k:k + 300]) for k in range(0, 1200, 300)])
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        ds = ray.data.from_numpy(x).map_batches(lambda b: {"y": m(b["data"])}, batch_size=250,
                                                 batch_format="numpy")
        y = np.concatenate([b["y"] for b in ds.iter_batches(batch_size=None,
                                                            batch_format="numpy")])
    finally:
        ray.shutdown()
    assert os.getpid() not in {pid for _, pid in parts}
    want = reference(g, x)
    np.testing.assert_array_equal(np.concatenate([part for part, _ in parts]), want)
    np.testing.assert_array_equal(y, want)


def test_blocked_gate_order_gives_bit_identical_outputs(tmp_path):
    """compile(relayout='blocked') orders each logic op's gates, within a gate id, by blocks of
    first inputs (16 KiB of words: 256 at 512-bit words) and then by second input -- the
    cache-blocked order; the producing buffers are renumbered to match. Outputs equal numpy's
    bit for bit, the order really differs from the default, and an unknown order is refused."""
    g = logic_graph(8, n_in=600, widths=(1500, 1200), k=6)
    x = bits(700, 600, seed=9)
    want = reference(g, x)
    orders = {}
    for order in ("runs", "blocked"):
        m = polyir.compile(g, "c", relayout=order, word_bits=512, cache_dir=tmp_path)
        np.testing.assert_array_equal(m(x), want)
        orders[order] = [op for op in m.program.ops if op.op == "logic"]
    for runs, blocked in zip(orders["runs"], orders["blocked"]):
        assert not np.array_equal(runs.consts["a"], blocked.consts["a"])
    for op in orders["blocked"][:-1]:  # (the last op's order also keeps its GroupSum groups)
        gate, a, b = (op.consts[k].astype(np.int64) for k in ("gate", "a", "b"))
        source = op.consts.get("a_in", np.zeros_like(a))  # reads around copy gates: several buffers
        same_run = (gate[1:] == gate[:-1]) & (source[1:] == source[:-1])
        block = a // 256
        assert np.all(block[1:][same_run] >= block[:-1][same_run])
        same_block = same_run & (block[1:] == block[:-1])
        assert np.all(b[1:][same_block] >= b[:-1][same_block])
    with pytest.raises(polyir.GraphError, match="relayout"):
        polyir.compile(g, "c", relayout="hilbert", cache_dir=tmp_path)


def test_two_models_link_into_one_program(tmp_path):
    g1, g2 = logic_graph(3), logic_graph(4, widths=(80, 40), k=5, tau=1.0)
    for name, g in (("m1", g1), ("m2", g2)):
        src, header, tables = c.codegen_files(g, prefix=f"{name}_")
        assert not tables
        (tmp_path / f"{name}.c").write_text(src)
        (tmp_path / f"{name}.h").write_text(header)
    x = bits(70, 32, seed=5)
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    (tmp_path / "main.c").write_text(textwrap.dedent("""
        #include <stdio.h>
        #include <stdlib.h>
        #include "m1.h"
        #include "m2.h"
        int main(void) {
          static unsigned char x[70 * 32];
          static float y1[70 * 4], y2[70 * 5];
          FILE* f = fopen("x.bin", "rb");
          if (!f || fread(x, 1, sizeof x, f) != sizeof x) return 3;
          fclose(f);
          const void* in[1] = {x};
          void* o1[1] = {y1};
          void* o2[1] = {y2};
          if (m1_run(in, o1, 1, 70, 2) || m2_run(in, o2, 1, 70, 1)) return 4;
          for (int i = 0; i < 70 * 4; i++) printf("%g\\n", y1[i]);
          for (int i = 0; i < 70 * 5; i++) printf("%g\\n", y2[i]);
          return 0;
        }"""))
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O1", "-std=gnu11", "-o", "prog", "main.c", "m1.c", "m2.c", "-lm",
                    "-pthread"], cwd=tmp_path, check=True, capture_output=True, timeout=300)
    out = subprocess.run(["./prog"], cwd=tmp_path, check=True, capture_output=True, text=True)
    got = np.array(out.stdout.split(), dtype=np.float32)
    np.testing.assert_array_equal(got[:280], reference(g1, x).reshape(-1))
    np.testing.assert_array_equal(got[280:], reference(g2, x).reshape(-1))


def test_cli_codegen_writes_a_header(tmp_path):
    from polyir.cli.main import main
    polyir.save(logic_graph(6), tmp_path / "g.h5")
    assert main(["codegen", str(tmp_path / "g.h5"), "-o", str(tmp_path / "g.c"), "--header",
                 str(tmp_path / "g.h"), "--prefix", "net_"]) == 0
    header = (tmp_path / "g.h").read_text()
    assert "int net_run(" in header and "net_run_tables" in header
    assert "int net_run(" in (tmp_path / "g.c").read_text()
    # the header matches the source: both compile together
    (tmp_path / "use.c").write_text('#include "g.h"\nint f(void) { return (int)net_tile(); }\n')
    subprocess.run([os.environ.get("CC", "cc"), "-std=gnu11", "-c", "use.c", "g.c"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=300)


def test_bad_prefix_is_refused():
    with pytest.raises(polyir.GraphError, match="prefix"):
        c.codegen(logic_graph(0), prefix="9 bad")


def test_big_parameter_tables_travel_as_data(tmp_path):
    thresholds = np.sort(np.random.default_rng(7).normal(size=(600, 20)), 1).astype(np.float32)
    g = ir.Graph.sequential(ir.Binarize(thresholds, axis=0), ir.GroupSum(600, tau=1.0),
                            input_shape=(600,))
    m = polyir.compile(g, "c", cache_dir=tmp_path)
    assert len(m.source) < 60_000  # 12,000 thresholds would take ~150 kB as literals
    assert len(m.tables) >= 1
    x = np.random.default_rng(8).normal(size=(90, 600)).astype(np.float32)
    expected = (x[:, :, None] > thresholds[None]).sum(-1).astype(np.float32)
    np.testing.assert_array_equal(m(x), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(m))(x), expected)


def test_large_logic_source_stays_small():
    g = logic_graph(9, n_in=64, widths=(20000,), k=10)
    src = c.codegen(g, optimize=False)
    assert len(src) < 100_000  # 40,000 gate indices live in a data table


def _g1280():
    rng = np.random.default_rng(0)

    def layer(n_in, n):
        return ir.LogicLayer(rng.integers(0, n_in, n), rng.integers(0, n_in, n),
                             rng.integers(0, 16, n))
    return ir.Graph.sequential(layer(128, 640), layer(640, 640), ir.GroupSum(10),
                               input_shape=(128,), input_elem="bit")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 flags")
@pytest.mark.parametrize("march", [None, "skylake-avx512"])
def test_1280_gate_graph_compiles_quickly(tmp_path, march):
    """gcc -O3 on AVX-512 targets once spent minutes in its combiner on this graph's last
    layer; the emitted code keeps every run's bounds in data so that cannot recur. A blown-up
    compile fails here by timeout instead of hanging."""
    src = c.codegen(_g1280(), word_bits=512)
    (tmp_path / "g.c").write_text(src)
    flags = c.flags_for(portable=march is not None,
                        extra=(f"-march={march}",) if march else ())
    cmd = [os.environ.get("CC", "cc"), *flags, "-o", "g.so", "g.c", "-lm", "-pthread"]
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, timeout=60)


def test_word_width_follows_the_batch(tmp_path):
    g = logic_graph(10)
    m = polyir.compile(g, "c", cache_dir=tmp_path)
    assert m.word_bits_for(10, 1) == 64 and m.word_bits_for(100, 1) == 128
    assert m.word_bits_for(10**6, 1) == m.tile >= 256
    for n in (1, 10, 100, 5000):
        x = bits(n, 32, seed=n)
        np.testing.assert_array_equal(m(x), reference(g, x))
    fixed = polyir.compile(g, "c", cache_dir=tmp_path, word_bits=256)
    assert fixed.word_bits_for(10, 1) == 256


def test_opt_level_and_progress_line(tmp_path, capfd):
    g = logic_graph(11)
    slow = tmp_path / "slowcc"
    real = shutil.which(os.environ.get("CC", "cc"))
    slow.write_text(f'#!/bin/sh\nsleep 1.3\nexec "{real}" "$@"\n')
    slow.chmod(0o755)
    m = polyir.compile(g, "c", cache_dir=tmp_path, cc=str(slow), opt_level=1, word_bits=256)
    assert "polyir: compiling" in capfd.readouterr().err
    x = bits(50, 32)
    np.testing.assert_array_equal(m(x), reference(g, x))
    with pytest.raises(polyir.GraphError, match="opt_level"):
        polyir.compile(g, "c", cache_dir=tmp_path, opt_level=7)


def test_bool_input_is_read_in_place(tmp_path):
    g = logic_graph(12)
    m = polyir.compile(g, "c", cache_dir=tmp_path)
    x = bits(700, 32).astype(bool)
    np.testing.assert_array_equal(m(x), reference(g, x))
    assert m._convert(0, x, 1).base is not None  # a view, not a converted copy


def test_concurrent_calls_share_no_workspace(tmp_path):
    """Calls from several Python threads at once (each itself on two C threads, so workspace
    blocks are taken, given back and swapped between calls of different sizes) all give their
    own batch's answer."""
    from concurrent.futures import ThreadPoolExecutor
    g = logic_graph(3)
    m = polyir.compile(g, "c", cache_dir=tmp_path)
    batches = [bits(n, 32, seed=n) for n in (1, 300, 700, 64, 1500, 5, 900, 260)]
    expected = [reference(g, x) for x in batches]

    def run(k):
        x = batches[k % len(batches)]
        return k, m(x, threads=1 + k % 3)

    with ThreadPoolExecutor(4) as pool:
        for k, y in pool.map(run, range(64)):
            np.testing.assert_array_equal(y, expected[k % len(batches)])
