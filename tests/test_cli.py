"""The `polyir` command: info (table, --json, --kinds), check (exit 0 / 1, --json), demo, -h."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import polyir
from polyir import cli
from polyir.ir.h5 import FORMAT_VERSION
from families import family_graphs


@pytest.fixture
def ffnn_file(tmp_path):
    g = family_graphs()["ffnn"]
    g.metadata.update({"author": "test", "scales": np.array([1.5, 2.5])})
    path = tmp_path / "ffnn.h5"
    polyir.save(g, path)
    return path


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_table(capsys, ffnn_file):
    code, out, err = run(capsys, "info", ffnn_file)
    assert code == 0 and not err
    out = " ".join(out.split())                  # rich wraps long titles
    for text in ("input", "affine_1", "Activation", "real(8)", "real(1)", f"format {FORMAT_VERSION}"):
        assert text in out
    # parameter counts computed here: Affine 8x4 + 8 = 40, Affine 1x8 + 1 = 9
    assert "40" in out and "49 parameters" in out
    assert "author" in out                        # graph metadata is shown


def test_info_json(capsys, ffnn_file):
    code, out, _ = run(capsys, "info", "--json", ffnn_file)
    assert code == 0
    data = json.loads(out)
    g = polyir.load(ffnn_file)
    assert data["format"] == FORMAT_VERSION
    assert [r["node"] for r in data["nodes"]] == list(g.nodes)
    assert [r["kind"] for r in data["nodes"]] == [type(n).__name__ for n in g.nodes.values()]
    expected = sum(a.size for n in g.nodes.values() for a in vars(n).values()
                   if isinstance(a, np.ndarray) and a.dtype.kind == "f")
    assert data["parameters"] == expected == 49
    row = {r["node"]: r for r in data["nodes"]}
    assert row["affine"]["parameters"] == 40 and row["affine"]["output"] == "real(8)"
    assert row["affine"]["inputs"] == ["input"]
    assert data["edges"] == [list(e) for e in g.edges]
    assert data["metadata"] == {"author": "test", "scales": [1.5, 2.5]}


def test_info_nir_file_and_kinds(capsys, nir_data):
    code, out, _ = run(capsys, "info", "--json", "--kinds", nir_data / "lif_norse.nir")
    assert code == 0
    data = json.loads(out)
    assert data["format"] == "nir 0.1.1"
    assert {r["kind"] for r in data["nodes"]} == {"Input", "Affine", "LIF", "Output"}
    cov = data["coverage"]
    assert set(cov) == set(polyir.KINDS)
    assert "nir" in cov["Affine"] and "nir" not in cov["LogicLayer"]
    code, out, _ = run(capsys, "info", "--kinds", nir_data / "cnn_sinabs.nir")
    assert code == 0 and "kind coverage" in out and "SumPool2d" in out


def test_check_ok(capsys, ffnn_file):
    code, out, err = run(capsys, "check", ffnn_file)
    assert code == 0 and "ok (6 nodes, 5 edges)" in out and not err
    code, out, _ = run(capsys, "check", "--json", ffnn_file)
    assert code == 0 and json.loads(out) == {"file": str(ffnn_file), "ok": True, "nodes": 6,
                                             "edges": 5}


def test_check_failures(capsys, ffnn_file, tmp_path, nir_data):
    with h5py.File(ffnn_file, "r+") as f:               # an Affine whose bias lost an entry
        bias = f["node/nodes/affine/bias"][()]
        del f["node/nodes/affine/bias"]
        f["node/nodes/affine"].create_dataset("bias", data=bias[:-1])
    code, out, err = run(capsys, "check", ffnn_file)
    assert code == 1 and not out
    assert err.startswith("FormatError:") and "bias" in err and "/node/nodes/affine" in err
    code, out, _ = run(capsys, "check", "--json", ffnn_file)
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and data["error"] == "FormatError"
    assert "bias" in data["message"]
    code, _, err = run(capsys, "check", nir_data / "braille_noDelay_bias_zero_subgraph.nir")
    assert code == 1 and "'lif'" in err and "does not exist" in err
    code, _, err = run(capsys, "check", tmp_path / "missing.h5")
    assert code == 1 and "no such file" in err
    (tmp_path / "text.h5").write_text("hello")
    code, _, err = run(capsys, "check", tmp_path / "text.h5")
    assert code == 1 and "not a readable HDF5 file" in err


def test_info_failure_exits_1_with_json(capsys, tmp_path):
    code, out, err = run(capsys, "info", "--json", tmp_path / "missing.h5")
    assert code == 1 and json.loads(out)["ok"] is False and "no such file" in err
    code, out, err = run(capsys, "info", tmp_path / "missing.h5")
    assert code == 1 and not out and "FormatError" in err


def test_unreadable_inputs_exit_1_naming_the_file(capsys, ffnn_file, tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    for name, says in (("empty.npy", "cannot read input"), ("two.npz", "archive of arrays")):
        code, out, err = run(capsys, "run", ffnn_file, "--backend", "torch", "--input",
                             tmp_path / name)
        assert code == 1 and not out and err.startswith("GraphError:")
        assert says in err and name in err


def test_every_command_has_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["-h"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    description = " ".join(out.split("\n\n")[1].split())     # the paragraph after usage
    assert description.endswith(".") and "--json" in description
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "-h"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "usage: polyir " + name in out
        parser = cli.build_parser()._subparsers._group_actions[0].choices[name]
        silent = [a.option_strings or a.dest for a in parser._actions if not a.help]
        assert not silent, f"polyir {name}: options without help text: {silent}"
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2


def test_demo_families(capsys, tmp_path, monkeypatch):
    """Each family's file holds a graph whose torch import computes what the demo's torch model
    computes."""
    import torch
    from polyir.cli.demo import family_models
    monkeypatch.setitem(sys.modules, "polyir.cli.demo_steps", None)   # only the family part
    code, out, _ = run(capsys, "demo", "--out", tmp_path)
    assert code == 0
    for family, (model, example) in family_models().items():
        assert f"{family}:" in out
        back = polyir.to_torch(polyir.load(tmp_path / f"{family}.h5")).eval()
        with torch.no_grad():
            want, got = model.eval()(example), back(example)
        if isinstance(want, tuple):          # stateful: (y, state) of the first step
            want, got = want[0], got[0]
        torch.testing.assert_close(got, want)
    out = " ".join(out.split())                  # rich wraps long titles
    assert "DIFFERS" not in out and out.count("round trip identical") == len(family_models())


def test_console_script(ffnn_file, tmp_path):
    exe = Path(sys.executable).parent / "polyir"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "polyir.cli"]
    ok = subprocess.run(cmd + ["check", str(ffnn_file)], capture_output=True, text=True)
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = subprocess.run(cmd + ["check", str(tmp_path / "nope.h5")], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "no such file" in bad.stderr


@pytest.mark.slow
def test_full_demo(tmp_path):
    exe = Path(sys.executable).parent / "polyir"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "polyir.cli"]
    res = subprocess.run(cmd + ["demo", "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
