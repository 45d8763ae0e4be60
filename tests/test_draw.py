"""`polyir draw`: one picture per family of kinds (nodes, kinds, recurrent edges, nested graphs,
gate histograms, rule text), checked in the SVG that graphviz renders."""
from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import polyir
from polyir import ir
from polyir.cli import main

from families import family_graphs

# difflogic's gate order, written out here rather than taken from polyir
GATES = ["FALSE", "AND", "A AND NOT B", "A", "NOT A AND B", "B", "XOR", "OR", "NOR", "XNOR",
         "NOT B", "A OR NOT B", "NOT A", "NOT A OR B", "NAND", "TRUE"]
SVG = "{http://www.w3.org/2000/svg}"

needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="graphviz's 'dot' program is not installed and could not "
                                      "be installed here (make setup tries apt-get / brew)")


def draw_svg(graph, tmp_path, name="g"):
    path = tmp_path / f"{name}.h5"
    polyir.save(graph, path)
    out = tmp_path / f"{name}.svg"
    assert main(["draw", str(path), "-o", str(out)]) == 0
    root = ET.parse(out).getroot()
    nodes, edges = [], []
    for g in root.iter(f"{SVG}g"):
        texts = [t.text or "" for t in g.iter(f"{SVG}text")]
        if g.get("class") == "node":
            nodes.append(texts)
        elif g.get("class") == "edge":
            dashed = any(p.get("stroke-dasharray") for p in g.iter(f"{SVG}path"))
            edges.append((g.find(f"{SVG}title").text, texts, dashed))
    return nodes, edges


def nested():
    inner = ir.Graph.sequential(ir.Affine(np.eye(3, dtype=np.float32), np.zeros(3, np.float32)),
                                ir.Activation("tanh"), input_shape=(3,))
    g = ir.Graph()
    g.add("x", ir.Input((3,)))
    g.add("block", inner)
    g.add("y", ir.Output((3,)))
    g.connect("x", "block")
    g.connect("block", "y")
    return g


@needs_dot
@pytest.mark.parametrize("family", list(family_graphs()) + ["nested"])
def test_one_picture_per_family(family, tmp_path):
    graph = nested() if family == "nested" else family_graphs()[family]
    nodes, edges = draw_svg(graph, tmp_path, family)
    leaves = {}  # every drawn (non-graph) node: its path and kind

    def collect(g, prefix=""):
        for n, k in g.nodes.items():
            if isinstance(k, ir.Graph):
                collect(k, prefix + n + ".")
            else:
                leaves[prefix + n] = type(k).__name__
    collect(graph)
    assert len(nodes) == len(leaves)
    heads = {(texts[0], texts[1].split(" ")[0]) for texts in nodes}
    assert heads == {(p.rsplit(".", 1)[-1], kind) for p, kind in leaves.items()}
    inner_edges = sum(len(k.edges) for k in graph.nodes.values() if isinstance(k, ir.Graph))
    assert len(edges) == len(graph.edges) + inner_edges
    dashed = [e for e in edges if e[2]]
    if family == "leaky_integrators":      # rec -> lif closes the loop through the LIF
        assert len(dashed) == 1 and dashed[0][1] == ["t-1"]
    else:
        assert not dashed


@needs_dot
def test_logic_layers_show_width_and_gate_histogram(tmp_path):
    graph = family_graphs()["logic"]
    nodes, _ = draw_svg(graph, tmp_path)
    for name, node in graph.nodes.items():
        if not isinstance(node, ir.LogicLayer):
            continue
        texts = next(t for t in nodes if t[0] == name)
        assert texts[2] == f"width {len(node.gate)} gates"
        shown = re.findall(r"([A-Z][A-Z ]*?) (\d+)", ", ".join(texts[3:]))
        want = {GATES[g]: int(c) for g, c in enumerate(np.bincount(node.gate, minlength=16)) if c}
        assert {n: int(c) for n, c in shown} == want


@needs_dot
def test_rule_sets_show_their_rules(tmp_path):
    nodes, edges = draw_svg(family_graphs()["rules"], tmp_path)
    texts = next(t for t in nodes if t[0] == "rules")
    body = " ".join(texts)
    assert "h(X) :-" in body and "edge(X, Y)" in body and "?- out" in body
    assert sorted(e[1][0] for e in edges if e[1]) == ["edge", "feat"]   # the port labels


def test_dot_source_needs_no_graphviz_and_keeps_odd_names(tmp_path):
    g = ir.Graph.sequential(ir.Activation("relu"), input_shape=(2,))
    g.nodes['say "hi" \\ there'] = g.nodes.pop("activation")
    g.edges = [(a.replace("activation", 'say "hi" \\ there'), b.replace(
        "activation", 'say "hi" \\ there')) for a, b in g.edges]
    g.check()
    path = tmp_path / "odd.h5"
    polyir.save(g, path)
    assert main(["draw", str(path), "-o", str(tmp_path / "odd.dot")]) == 0
    source = (tmp_path / "odd.dot").read_text()
    assert 'say \\"hi\\" \\\\ there' in source      # quoted and escaped for DOT
    assert re.search(r"^\s*n\d+ -> n\d+", source, re.M)


def test_unknown_picture_format_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "g.h5"
    polyir.save(family_graphs()["ffnn"], path)
    assert main(["draw", str(path), "-o", str(tmp_path / "g.bmp")]) == 1
    err = capsys.readouterr().err
    assert "DrawError" in err and ".svg" in err
