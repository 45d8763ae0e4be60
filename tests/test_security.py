"""Hostile input: names, files, caches and values that must never leak, hang, crash or compute
a wrong answer. Expected values come from the numpy reference of tests/test_backend_c.py."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

import polyir
from families import family_graphs
from polyir import ir
from polyir.backends import c as c_backend
from polyir.backends import cuda as cuda_backend

from test_backend_c import NEURONS, Ref, random_inputs

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

F32 = np.float32

# names that once broke the generated C: keywords, the ABI's own symbols, C library functions
# whose `<name>_r` twin exists, a node `node` beside a node `weight`, non-ASCII, comment and
# preprocessor tricks, terminal escapes
HOSTILE_NAMES = ["int", "polyir_run", "rand", "strtok", "node", "weight", "lgamma", "drand48",
                 "strerror", "random", "é", "名前", "a*", "*", "x\\", "??=", "\x1b[31mred",
                 "line\nint main(void) { return 1; }", "#define TILE 1", "main", "pctx"]


def _strip_comments(source: str) -> str:
    return re.sub(r"/\*.*?\*/", " ", source, flags=re.S)


def _graph_with_names(names, rng):
    """x -> Affine -> LI (stateful: parameter tables named after `r`) -> tanh -> y, with the
    nodes named from `names` and inserted in an order unlike the evaluation order."""
    x, fc, cell, act, y = names
    g = ir.Graph(metadata={"dt": 1e-3})
    g.add(y, ir.Output((4,)))
    g.add(act, ir.Activation("tanh"))
    g.add(cell, NEURONS["LI"](4, rng))
    g.add(fc, ir.Affine(rng.normal(size=(4, 3)).astype(F32), rng.normal(size=4).astype(F32)))
    g.add(x, ir.Input((3,)))
    for e in ((x, fc), (fc, cell), (cell, act), (act, y)):
        g.connect(*e)
    return g


@pytest.mark.parametrize("start", range(0, len(HOSTILE_NAMES), 5))
def test_hostile_names_compile_and_match_the_reference(start, tmp_path):
    rng = np.random.default_rng(start)
    names = (HOSTILE_NAMES * 2)[start:start + 5]
    g = _graph_with_names(names, rng)
    program = polyir.compile(g, "c", cache_dir=tmp_path)
    seq = (50 * rng.normal(size=(6, 9, 3))).astype(F32)
    np.testing.assert_allclose(program.run(seq), Ref(g).sequence(seq)[0], rtol=1e-4, atol=1e-5)
    # names live only inside comments: the code equals that of the same graph with plain names
    plain = _graph_with_names([f"n{k}" for k in range(5)], np.random.default_rng(start))
    assert _strip_comments(program.source) == _strip_comments(c_backend.codegen(plain))
    assert (_strip_comments(cuda_backend.codegen(g))
            == _strip_comments(cuda_backend.codegen(plain)))
    assert "\x1b" not in program.source and "\nint main" not in program.source


def test_nodes_named_node_and_weight_do_not_collide(tmp_path):
    rng = np.random.default_rng(3)
    g = ir.Graph()
    g.add("x", ir.Input((3,)))
    g.add("node", ir.Affine(rng.normal(size=(5, 3)).astype(F32), np.zeros(5, F32)))
    g.add("weight", ir.Affine(rng.normal(size=(2, 5)).astype(F32), np.ones(2, F32)))
    g.add("y", ir.Output((2,)))
    for e in (("x", "node"), ("node", "weight"), ("weight", "y")):
        g.connect(*e)
    xs = rng.normal(size=(7, 3)).astype(F32)
    got = polyir.compile(g, "c", cache_dir=tmp_path)(xs)
    np.testing.assert_allclose(got, Ref(g)(xs)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["ffnn", "logic", "logic_conv", "leaky_integrators"])
def test_evaluation_order_never_follows_names_or_insertion(family, tmp_path):
    """The same graph with its nodes stored in reverse order (as renaming a node in a file
    does to its position) computes the same on C as the numpy reference."""
    g = family_graphs()[family]
    rev = ir.Graph(metadata=g.metadata)
    for n in reversed(list(g.nodes)):
        rev.add(n, g.nodes[n])
    for e in g.edges:
        rev.connect(*e)
    assert rev.infer_types() == g.infer_types()
    rng = np.random.default_rng(5)
    program = polyir.compile(rev, "c", cache_dir=tmp_path)
    if g.stateful:
        seq = random_inputs(g, 11, rng, steps=7)
        np.testing.assert_allclose(program.run(*seq), Ref(g).sequence(*seq)[0], rtol=1e-4,
                                   atol=1e-5)
    else:
        xs = random_inputs(g, 11, rng)
        np.testing.assert_allclose(program(*xs), Ref(g)(*xs)[0], rtol=1e-5, atol=1e-5)


def test_check_is_linear_in_nodes_stored_out_of_order():
    """8,000 nodes stored in reverse topological order: typing visits each node about once
    (counted, not timed)."""
    n = 8000
    g = ir.Graph()
    names = [f"s{k}" for k in range(n)]
    g.add("y", ir.Output((2,)))
    for k in reversed(range(n)):
        g.add(names[k], ir.Scale(np.ones(2, F32)))
    g.add("x", ir.Input((2,)))
    chain = ["x"] + names + ["y"]
    for a, b in zip(chain, chain[1:]):
        g.connect(a, b)
    calls = 0
    original = ir.Scale.out_port

    def counting(self, inputs):
        nonlocal calls
        calls += 1
        return original(self, inputs)

    ir.Scale.out_port = counting
    try:
        g.check()
    finally:
        ir.Scale.out_port = original
    assert calls <= 3 * n


# ---------------------------------------------------------------------------------------------
# the loader reads only the file it was given, bounded in time and memory
# ---------------------------------------------------------------------------------------------

SECRET = "polyir-test-secret-51d2"


@pytest.fixture
def saved(tmp_path):
    """A saved ffnn graph, a file holding a secret, and an HDF5 file holding it as data."""
    import h5py
    path = tmp_path / "model.h5"
    polyir.save(family_graphs()["ffnn"], path)
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET * 40)
    secret_h5 = tmp_path / "secret.h5"
    with h5py.File(secret_h5, "w") as f:
        f.create_dataset("data", data=np.frombuffer((SECRET * 40).encode(), np.uint8)
                         .astype(np.float32))
    return path, secret, secret_h5


def _refused(path, *words):
    with pytest.raises(polyir.FormatError) as info:
        polyir.load(path)
    message = str(info.value)
    assert SECRET not in message
    for w in words:
        assert w in message, message
    return message


def _swap_dataset(path, target, **kw):
    import h5py
    with h5py.File(path, "r+") as f:
        parent, _, name = target.rpartition("/")
        del f[target]
        if "layout" in kw:
            f[parent].create_virtual_dataset(name, kw["layout"])
        else:
            f[parent].create_dataset(name, **kw)


def test_external_raw_storage_is_refused_before_reading(saved):
    path, secret, _ = saved
    _swap_dataset(path, "node/nodes/affine/weight", shape=(8, 4), dtype="f4",
                  external=[(str(secret), 0, 128)])
    _refused(path, "external", "node/nodes/affine/weight")
    _swap_dataset(path, "node/nodes/affine/weight", shape=(8, 4), dtype="S1",
                  external=[(str(secret), 0, 32)])
    _refused(path, "external")


def test_external_storage_in_metadata_strings_is_refused(saved):
    import h5py
    path, secret, _ = saved
    with h5py.File(path, "r+") as f:
        meta = f["node"].require_group("metadata")
        meta.create_dataset("note", shape=(64,), dtype="u1", external=[(str(secret), 0, 64)])
    _refused(path, "external", "metadata/note")


def test_virtual_dataset_is_refused(saved):
    import h5py
    path, _, secret_h5 = saved
    layout = h5py.VirtualLayout(shape=(8,), dtype="f4")
    layout[:] = h5py.VirtualSource(str(secret_h5), "data", shape=(40 * len(SECRET),))[:8]
    _swap_dataset(path, "node/nodes/affine/bias", layout=layout)
    _refused(path, "virtual", "node/nodes/affine/bias")


def test_links_are_refused(saved):
    import h5py
    path, _, secret_h5 = saved
    with h5py.File(path, "r+") as f:
        del f["node/nodes/affine/bias"]
        f["node/nodes/affine/bias"] = h5py.ExternalLink(str(secret_h5), "/data")
    _refused(path, "ExternalLink")
    with h5py.File(path, "r+") as f:
        del f["node/nodes/affine/bias"]
        f["node/nodes/affine/bias"] = h5py.SoftLink("/version")
    _refused(path, "SoftLink")


@pytest.mark.parametrize("how", ["scaleoffset", "lzf", "unknown"])
def test_filters_outside_the_allow_list_are_refused(saved, how):
    import h5py
    from h5py import h5d, h5p, h5s, h5t, h5z
    path, _, _ = saved
    values = np.ones(8, np.float32)
    with h5py.File(path, "r+") as f:
        del f["node/nodes/affine/bias"]
        group = f["node/nodes/affine"]
        if how in ("scaleoffset", "lzf"):
            group.create_dataset("bias", data=values, **{"scaleoffset": dict(scaleoffset=2),
                                                         "lzf": dict(compression="lzf")}[how])
        else:  # an optional filter of an id nobody registered: declared, data stored raw
            dcpl = h5p.create(h5p.DATASET_CREATE)
            dcpl.set_chunk((8,))
            dcpl.set_filter(32767, h5z.FLAG_OPTIONAL)
            ds = h5d.create(group.id, b"bias", h5t.py_create(values.dtype),
                            h5s.create_simple((8,)), dcpl=dcpl)
            ds.write(h5s.ALL, h5s.ALL, values)
            ds.close()  # before the file closes: a dangling low-level id can crash at collection
    _refused(path, "filter", "node/nodes/affine/bias")


def test_allowed_filters_still_load(saved):
    path, _, _ = saved
    bias = np.arange(8, dtype=np.float32)
    _swap_dataset(path, "node/nodes/affine/bias", data=bias, compression="gzip", shuffle=True,
                  fletcher32=True)
    np.testing.assert_array_equal(polyir.load(path).nodes["affine"].bias, bias)


def test_huge_fixed_length_string_is_refused_before_reading(saved):
    import h5py
    import resource
    path, _, _ = saved
    with h5py.File(path, "r+") as f:
        f["node"].require_group("metadata").create_dataset("big", shape=(),
                                                           dtype="S1000000000")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _refused(path, "1,000,000,000 bytes", "metadata/big")
    assert path.stat().st_size < 1 << 20
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 200 << 10


FORGED_LENGTH = 0xF0000000  # what a corrupted variable-length string declares: 4,026,531,840


def _forge_first_string_length(path, dataset):
    """Overwrite the length at the head of the first heap reference of a contiguous
    variable-length string dataset (4 bytes, little-endian: HDF5's encoding)."""
    import h5py
    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_offset()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        assert int.from_bytes(fh.read(4), "little") < 1000  # a real length was there
        fh.seek(offset)
        fh.write(FORGED_LENGTH.to_bytes(4, "little"))


@pytest.mark.parametrize("timeout", [None, "auto"])
def test_a_corrupted_string_length_is_refused_before_reading(saved, timeout):
    import h5py
    path, _, _ = saved
    with h5py.File(path, "r+") as f:
        f["node"].require_group("metadata").create_dataset("note", data="a short note",
                                                           dtype=h5py.string_dtype())
    assert polyir.load(path).metadata["note"] == "a short note"
    _forge_first_string_length(path, "node/metadata/note")
    with pytest.raises(polyir.FormatError, match="declares a string of 4,026,531,840 bytes") \
            as info:
        polyir.load(path, timeout=timeout)  # in this process too: refused before any read
    assert "node/metadata/note" in str(info.value)


def test_a_corrupted_string_length_in_chunks_is_refused(tmp_path):
    """Edge names stored in chunks: the lengths are read from each chunk as stored."""
    import h5py
    path = tmp_path / "model.h5"
    polyir.save(family_graphs()["ffnn"], path)
    with h5py.File(path, "r+") as f:
        edges = f["node/edges"][()]
        del f["node/edges"]
        f["node"].create_dataset("edges", data=edges, dtype=h5py.string_dtype(), chunks=(2, 2))
    assert polyir.load(path) == family_graphs()["ffnn"]
    with h5py.File(path, "r+") as f:
        ds = f["node/edges"]
        mask, raw = ds.id.read_direct_chunk((0, 0))
        assert int.from_bytes(raw[:4], "little") == len(edges[0, 0])
        ds.id.write_direct_chunk((0, 0), FORGED_LENGTH.to_bytes(4, "little") + raw[4:], mask)
    for timeout in (None, "auto"):
        with pytest.raises(polyir.FormatError, match="declares a string of 4,026,531,840") \
                as info:
            polyir.load(path, timeout=timeout)
        assert "node/edges" in str(info.value)


def test_a_corrupted_string_length_in_an_attribute_stays_within_the_probes_memory(tmp_path):
    """A string attribute's heap references live in the object header, which cannot be read
    raw: the probe child's memory cap is the bound, and the load is a FormatError."""
    import h5py
    path = tmp_path / "model.h5"
    polyir.save(family_graphs()["ffnn"], path)
    marker = "q" * 0x1357  # an unlikely length to find the reference by
    with h5py.File(path, "r+") as f:  # a node group re-made with a version-1 object header,
        name = next(iter(f["node/nodes"]))  # which carries no checksum to catch the forgery
        f.move(f"node/nodes/{name}", "node/moved")
        node = f["node/nodes"].create_group(name)
        for key in f["node/moved"]:
            f.copy(f["node/moved"][key], node, key)
        del f["node/moved"]
        node.attrs.create(ir.h5.INFERRED_ATTR, data=[marker], dtype=h5py.string_dtype())
    with pytest.raises(polyir.FormatError, match="not an optional field"):
        polyir.load(path)
    data = bytearray(path.read_bytes())
    at = [m.start() for m in re.finditer(re.escape((0x1357).to_bytes(4, "little")), data)]
    assert at, "the attribute's heap reference was not found"
    for a in at:
        data[a:a + 4] = FORGED_LENGTH.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(polyir.FormatError, match="memory"):
        polyir.load(path)


@pytest.mark.parametrize("how", ["rewritten in place", "replaced"])
def test_a_file_changed_after_the_probe_is_read_as_probed(saved, monkeypatch, how):
    """The probe child and the read see the same bytes, taken once: a file rewritten (or its
    path replaced) between the two cannot bring unprobed bytes into this process."""
    from polyir.ir.h5 import probe
    path, _, _ = saved
    other = path.with_name("other.h5")
    polyir.save(family_graphs()["logic"], other)
    real = probe.parse_isolated

    def probe_then_change(reader, timeout, parse):
        real(reader, timeout, parse)
        if how == "replaced":
            os.replace(other, path)
        else:
            with open(path, "r+b") as fh:
                fh.truncate(0)
                fh.write(other.read_bytes())

    monkeypatch.setattr(probe, "parse_isolated", probe_then_change)
    assert polyir.load(path) == family_graphs()["ffnn"]
    assert polyir.load(path, timeout=None) == family_graphs()["logic"]  # it did change


def _child_behaviour(monkeypatch, fn):
    """Make the parse misbehave in the forked child only (the parent never runs it)."""
    import os
    from polyir.ir.h5 import read
    parent = os.getpid()
    real = read.parse

    def parse(reader):
        if os.getpid() != parent:
            fn()
        return real(reader)

    monkeypatch.setattr(read, "parse", parse)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_parse_that_hangs_is_killed_at_the_timeout(saved, monkeypatch):
    import time
    path, _, _ = saved

    def spin():
        while True:  # as libhdf5 looping inside one C call on corrupted bytes
            pass

    _child_behaviour(monkeypatch, spin)
    t0 = time.monotonic()
    with pytest.raises(polyir.FormatError, match="did not finish within 1 s"):
        polyir.load(path, timeout=1)
    assert time.monotonic() - t0 < 30


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_parse_that_crashes_or_allocates_gigabytes_is_a_format_error(saved, monkeypatch):
    import os
    import signal
    path, _, _ = saved
    _child_behaviour(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGSEGV))
    with pytest.raises(polyir.FormatError, match="crashed"):
        polyir.load(path)
    _child_behaviour(monkeypatch, lambda: np.ones(8 << 30, np.uint8))
    with pytest.raises(polyir.FormatError, match="memory"):
        polyir.load(path)


def test_a_flipped_bit_that_makes_libhdf5_loop_is_a_format_error_in_bounded_time(tmp_path):
    """Bit 7 of byte 10589 of the saved ffnn family graph (h5py 3.16 / HDF5 2.0 write it byte
    for byte the same each time) sends HDF5's object-header parser into an endless loop. Under
    other versions the byte may mean something else: the outcome is still a FormatError."""
    import time
    path = tmp_path / "ffnn.h5"
    polyir.save(family_graphs()["ffnn"], path)
    data = bytearray(path.read_bytes())
    data[10589] ^= 1 << 7
    path.write_bytes(bytes(data))
    t0 = time.monotonic()
    with pytest.raises(polyir.FormatError):
        polyir.load(path, timeout=2)
    assert time.monotonic() - t0 < 30


# ---------------------------------------------------------------------------------------------
# the compile cache loads only what it built
# ---------------------------------------------------------------------------------------------

def _cached(tmp_path):
    """A graph built into a fresh cache, not loaded in this process (damaging a library this
    process has mapped would kill it, as it would any program)."""
    g = family_graphs()["logic"]
    xs = random_inputs(g, 9, np.random.default_rng(2))
    so, _, hit = c_backend.build(c_backend.codegen(g), cache=tmp_path / "cache")
    assert not hit
    return g, xs, so, Ref(g)(*xs)[0]


@pytest.mark.parametrize("damage", ["half", "empty", "digest"])
def test_a_damaged_cache_entry_is_rebuilt_not_loaded(tmp_path, damage):
    g, xs, so, want = _cached(tmp_path)
    data = so.read_bytes()
    if damage == "half":  # dlopen of a truncated object used to die of SIGBUS
        so.write_bytes(data[:len(data) // 2])
    elif damage == "empty":
        so.write_bytes(b"")
    else:
        so.with_suffix(".sha256").write_text("0" * 64)
    again = polyir.compile(g, "c", cache_dir=tmp_path / "cache")
    assert not again.cache_hit and again.path == so
    assert so.read_bytes() == data or len(so.read_bytes()) > len(data) // 2
    np.testing.assert_array_equal(again(*xs), want)


def test_a_foreign_object_under_the_expected_name_is_never_loaded(tmp_path):
    """A shared object whose constructor runs on dlopen, placed where the cache expects the
    graph's build: it must be rebuilt over, its constructor never run."""
    import subprocess
    g, xs, so, want = _cached(tmp_path)
    marker = tmp_path / "constructor-ran"
    src = tmp_path / "evil.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void hello(void) '
                   f'{{ FILE* f = fopen("{marker}", "w"); if (f) fclose(f); }}\n'
                   "int polyir_run_packed(void) { return 0; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", str(src), "-o", str(so)], check=True)
    again = polyir.compile(g, "c", cache_dir=tmp_path / "cache")
    assert not marker.exists() and not again.cache_hit
    np.testing.assert_array_equal(again(*xs), want)


def test_the_cache_folder_is_private_and_refused_when_others_can_write(tmp_path):
    import os
    import stat
    from polyir.backends import CompileError
    g = family_graphs()["ffnn"]
    fresh = tmp_path / "new" / "cache"
    polyir.compile(g, "c", cache_dir=fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) & 0o077 == 0
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(CompileError, match=f"(?s){shared}.*written by other users.*chmod 700"):
        polyir.compile(g, "c", cache_dir=shared)
    if os.getuid() == 0:  # root can hand the folder to someone else
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 12345, 12345)
        with pytest.raises(CompileError, match=f"{theirs}.*owned by another user"):
            polyir.compile(g, "c", cache_dir=theirs)


def _dead_pid() -> int:
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temporary_files_of_killed_compiles_and_saves_are_removed(tmp_path):
    import os
    g = family_graphs()["ffnn"]
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    dead, alive = _dead_pid(), os.getpid()
    key = "0123abcd" * 5
    left = [cache / f".polyir-{key}-{dead}.x1y2z3.c", cache / f".polyir-{key}-{dead}.x1y2z3.so"]
    mine = cache / f".polyir-{key}-{alive}.q9w8e7.c"
    for p in left + [mine]:
        p.write_bytes(b"x" * 1000)
    polyir.compile(g, "c", cache_dir=cache)
    assert not any(p.exists() for p in left) and mine.exists()
    target = tmp_path / "model.h5"
    stale = tmp_path / f".model.h5.{dead}.abc123.tmp"
    other = tmp_path / f".other.h5.{dead}.abc123.tmp"  # not this target's: left alone
    stale.write_bytes(b"partial")
    other.write_bytes(b"partial")
    polyir.save(g, target)
    assert not stale.exists() and other.exists() and polyir.load(target) == g
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".other.h5." + other.name.split(".", 3)[-1], "cache", "model.h5"])


def test_a_killed_save_leaves_a_temporary_file_that_the_next_save_removes(tmp_path):
    """kill -9 during a save: the target is the old graph; the next save cleans up."""
    import signal
    import subprocess
    import sys
    target = tmp_path / "model.h5"
    polyir.save(family_graphs()["ffnn"], target)
    script = (f"import os, signal, polyir, sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
              "from families import family_graphs\n"
              "import polyir.ir.h5.write as writer\n"
              "real = writer._write_graph\n"
              "def die(*a, **k):\n"
              "    real(*a, **k); os.kill(os.getpid(), signal.SIGKILL)\n"
              "writer._write_graph = die\n"
              f"polyir.save(family_graphs()['logic'], {str(target)!r})\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL
    assert polyir.load(target) == family_graphs()["ffnn"]
    assert len(list(tmp_path.glob(".model.h5.*.tmp"))) == 1
    polyir.save(family_graphs()["cnn"], target)
    assert list(tmp_path.glob(".model.h5.*")) == []


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------

TERMINAL_TRICKS = "\x1b[2J\x1b[31mred\rX\x08[bold red]loud:smile:\u202e"


def test_names_are_printed_escaped(capsys, tmp_path):
    from polyir import cli
    g = family_graphs()["ffnn"]
    renamed = ir.Graph(metadata={"note": TERMINAL_TRICKS})
    new = {n: (TERMINAL_TRICKS if n == "affine" else n) for n in g.nodes}
    for n, node in g.nodes.items():
        renamed.add(new[n], node)
    for e in g.edges:
        renamed.connect(new[e[0]], new[e[1]])
    path = tmp_path / "tricks.h5"
    polyir.save(renamed, path)
    for argv in (["info", path], ["run", path, "--input", _npy(tmp_path, (2, 4))],
                 ["compare", path, "--batch", "3"]):
        assert cli.main([str(a) for a in argv]) == 0
        out = capsys.readouterr()
        text = out.out + out.err
        for raw in ("\x1b", "\r", "\x08", "\u202e"):
            assert raw not in text, (argv[0], raw)
        if argv[0] == "info":
            assert "\\x1b[31mred\\rX\\x08[bold red]loud:smile:\\u202e" in text
    bad = tmp_path / "bad.h5"  # an error message that quotes a name is escaped too
    renamed.nodes[TERMINAL_TRICKS] = ir.Affine(np.ones((8, 5), F32), np.zeros(8, F32))
    import h5py
    polyir.save(g, bad)
    with h5py.File(bad, "r+") as f:
        f["node/nodes"].move("affine", TERMINAL_TRICKS)
    assert cli.main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "FormatError" in err and "\x1b" not in err and "\r" not in err


def _npy(tmp_path, shape):
    p = tmp_path / "x.npy"
    np.save(p, np.random.default_rng(0).normal(size=shape).astype(F32))
    return p


@pytest.mark.parametrize("argv", [["compare", "--batch", "-5"], ["bench", "--batch", "-1"],
                                  ["bench", "--steps", "-1"], ["bench", "--repeat", "0"],
                                  ["compare", "--steps", "0"], ["run", "--threads", "-2"],
                                  ["bench", "--batch", "many"]])
def test_bad_counts_are_usage_errors(capsys, tmp_path, argv):
    from polyir import cli
    path = tmp_path / "g.h5"
    polyir.save(family_graphs()["ffnn"], path)
    with pytest.raises(SystemExit) as info:
        cli.main([argv[0], str(path)] + argv[1:] + (["--input", "x.npy"] if argv[0] == "run"
                                                    else []))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert argv[1] in err and ("at least" in err or "not an integer" in err), err


# ---------------------------------------------------------------------------------------------
# out-of-domain values are GraphErrors when the node is built or the graph checked
# ---------------------------------------------------------------------------------------------

OUT_OF_DOMAIN = {
    "input shape 0": (lambda: ir.Input((0,)), "shape"),
    "input shape -3": (lambda: ir.Input((4, -3)), "shape"),
    "conv stride 0": (lambda: ir.Conv2d(None, np.ones((1, 1, 3, 3), F32), (0, 0)), "stride"),
    "conv1d stride 0": (lambda: ir.Conv1d(None, np.ones((1, 1, 3), F32), 0), "stride"),
    "conv dilation 0": (lambda: ir.Conv2d(None, np.ones((1, 1, 3, 3), F32), 1, 0, (0, 1)),
                        "dilation"),
    "groupsum tau -1": (lambda: ir.GroupSum(2, tau=-1.0), "tau"),
    "groupsum tau nan": (lambda: ir.GroupSum(2, tau=float("nan")), "tau"),
    "groupsum tau inf": (lambda: ir.GroupSum(2, tau=float("inf")), "tau"),
    "alpha nan": (lambda: ir.Activation("leaky_relu", float("nan")), "alpha"),
    "alpha inf": (lambda: ir.Activation("elu", float("inf")), "alpha"),
    "softplus beta 0": (lambda: ir.Activation("softplus", 0.0), "alpha"),
    "dt empty": (lambda: ir.Graph(metadata={"dt": ""}), "metadata"),
    "dt nan": (lambda: ir.Graph(metadata={"dt": float("nan")}), "metadata"),
    "dt 0": (lambda: ir.Graph(metadata={"dt": 0.0}), "metadata"),
    "dt -1": (lambda: ir.Graph(metadata={"dt": -1}), "metadata"),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_DOMAIN))
def test_out_of_domain_fields_are_graph_errors(case):
    build, field = OUT_OF_DOMAIN[case]
    with pytest.raises(polyir.GraphError) as info:
        build()
    assert info.value.field == field and info.value.fix


def test_out_of_domain_dt_in_a_file_is_refused_at_load(tmp_path):
    import h5py
    path = tmp_path / "lif.h5"
    polyir.save(family_graphs()["leaky_integrators"], path)
    with h5py.File(path, "r+") as f:
        del f["node/metadata/dt"]
        f["node/metadata"].create_dataset("dt", data=-1e-3)
    with pytest.raises(polyir.FormatError, match=r"metadata\['dt'\]"):
        polyir.load(path)


@pytest.mark.parametrize("node", ["tree", "orpool", "conv", "sumpool"])
def test_padding_larger_than_the_input_is_a_graph_error_at_check(node):
    """A LogicTree2d with padding (1000, 1000) on an 8x8 input used to make compile() build
    millions of padded windows."""
    rng = np.random.default_rng(0)
    make = {
        "tree": lambda: ir.LogicTree2d(np.zeros((2, 4, 3), np.int64),
                                       rng.integers(0, 16, (2, 3)), (3, 3), (1, 1), (1000, 1000)),
        "orpool": lambda: ir.OrPool2d((4, 4), (1, 1), (2, 2)),
        "conv": lambda: ir.Conv2d(None, np.ones((1, 1, 3, 3), F32), 1, (9, 9)),
        "sumpool": lambda: ir.SumPool2d((3, 3), (1, 1), (9, 9)),
    }[node]
    elem = "bit" if node in ("tree", "orpool") else "real"
    shape = (1, 8, 8) if node != "orpool" else (1, 1, 1)
    g = ir.Graph()
    g.add("x", ir.Input(shape, elem=elem))
    g.add("n", make())
    g.add("y", ir.Output((1,)))
    g.connect("x", "n")
    g.connect("n", "y")
    with pytest.raises(polyir.GraphError) as info:
        g.check()
    assert info.value.node == "n" and info.value.field == "padding"


# ---------------------------------------------------------------------------------------------
# torch modules and NIR graphs
# ---------------------------------------------------------------------------------------------

def test_torch_module_refuses_complex_input_and_runs_an_empty_batch():
    import torch
    fams = family_graphs()
    m = polyir.to_torch(fams["ffnn"]).eval()
    with pytest.raises(polyir.GraphError, match="complex") as info:
        m(torch.ones(2, 4, dtype=torch.complex64))
    assert info.value.field == "input"
    conv = polyir.to_torch(fams["logic_conv"]).eval()
    assert tuple(conv(torch.zeros(0, 2, 8, 8)).shape) == (0, 2)
    assert polyir.compile(fams["logic_conv"], "c")(np.zeros((0, 2, 8, 8), F32)).shape == (0, 2)


def test_torch_module_refuses_a_state_it_did_not_return():
    import torch
    m = polyir.to_torch(family_graphs()["leaky_integrators"])
    x = torch.ones(3, 3)
    y, state = m(x)
    lif = state["nodes"]["lif"]
    bad_states = [{}, "abc", {"nodes": {}, "recurrent": {}, "extra": 1},
                  {"nodes": state["nodes"], "recurrent": {"rec": torch.ones(5, 7)}},
                  {"nodes": dict(state["nodes"], lif=type(lif)(*[t[:, :2] for t in lif])),
                   "recurrent": state["recurrent"]},
                  {"nodes": dict(state["nodes"], lif=type(lif)(*[1j * t for t in lif])),
                   "recurrent": state["recurrent"]},
                  {"nodes": dict(state["nodes"], lif=torch.ones(3)),
                   "recurrent": state["recurrent"]}]
    for bad in bad_states:
        with pytest.raises(polyir.GraphError) as info:
            m(x, state=bad)
        assert info.value.field == "state" and "state=None" in info.value.fix
    y2, _ = m(x, state=state)  # the state it returned still works
    assert tuple(y2.shape) == (3, 2)


def test_from_nir_takes_tensors_that_require_grad():
    import nir
    import torch
    w = torch.randn(3, 2, requires_grad=True)
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2])),
                                "lin": nir.Affine(weight=w, bias=torch.zeros(3, requires_grad=True)),
                                "output": nir.Output(output_type=np.array([3]))},
                         edges=[("input", "lin"), ("lin", "output")])
    g = polyir.from_nir(graph)
    np.testing.assert_array_equal(g.nodes["lin"].weight, w.detach().numpy())


def test_a_huge_constant_table_never_enters_the_source():
    """Binarize with 16,777,216 thresholds (a 12 KB file when gzip-compressed) once made the C
    compiler chew on a 64 MB table: C and CUDA pass it as data (CUDA: a device buffer)."""
    import time
    g = ir.Graph.sequential(ir.Binarize(np.zeros(1 << 24, F32)), input_shape=(1,))
    t0 = time.monotonic()
    assert len(c_backend.codegen(g)) < 1 << 20
    program, renderer, source = cuda_backend.render(g)
    assert len(source) < 1 << 20
    assert max(a.size for a in renderer.tables) == 1 << 24
    assert time.monotonic() - t0 < 120


def test_an_absurd_input_width_is_a_graph_error_on_c():
    """Found by the fuzz target: an Input widened to 2**40 features before a Binarize with one
    threshold list loads (every shape agrees) but made the C lowering allocate 8 TiB."""
    g = ir.Graph.sequential(ir.Binarize(np.array([0.5], F32)), ir.GroupSum(1),
                            input_shape=(1 << 40,))
    with pytest.raises(polyir.GraphError) as info:
        c_backend.codegen(g)
    assert info.value.field == "shape" and info.value.fix


def test_a_crash_in_the_suite_prints_its_traceback(tmp_path):
    """A test that dies of SIGSEGV under this suite's conftest leaves the Python traceback of
    where it died, also after an earlier test replaced the handler (a JVM in the test process once
    left none; Ray's core installs its own handlers)."""
    import shutil
    import subprocess
    import sys
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_dies.py").write_text(  # first a test leaves SIGSEGV to no handler at
        "import ctypes\nimport signal\n\n\n"       # all, as a library's own handler would
        "def test_takes_the_handler():\n    signal.signal(signal.SIGSEGV, signal.SIG_DFL)\n\n\n"
        "def test_dies_here():\n    ctypes.string_at(0)\n")
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), str(tmp_path / "test_dies.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode < 0 or run.returncode >= 128, run.stdout + run.stderr
    assert "Fatal Python error: Segmentation fault" in run.stderr, run.stderr
    assert re.search(r'test_dies\.py", line 10 in test_dies_here', run.stderr), run.stderr
