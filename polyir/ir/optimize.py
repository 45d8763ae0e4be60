"""The logic optimiser: Graph -> an equivalent, smaller Graph (bit-identical outputs).

    g2 = polyir.optimize(g)

What it rewrites, layer by layer in topological order (LogicLayer nodes fed by one edge):

- constant propagation: a gate whose inputs make it constant (FALSE / TRUE, XOR(x, x), AND with
  a constant 0, ...) is removed and its readers read the constant instead (their gate choice
  changes, e.g. AND(x, 1) becomes the pass-through of x);
- NOT folding: where only other LogicLayers read a layer, a gate is kept in its positive form
  (NAND -> AND, NOT A -> A, XNOR -> XOR, ...) and every reader absorbs the negation into its own
  gate choice; so do reads of the same input under both polarities;
- identical-gate merging: gates computing the same function of the same inputs (operand order
  and polarity included) become one;
- dead gates: what no output can see is removed, and the readers' indices renumbered;
- constant bits into a GroupSum: the same number of constant bits is dropped from every group
  and the constant ones are added to `beta` (exact while beta stays an integer below 2**24).

A layer read by anything but LogicLayers (a GroupSum, an Output, another kind) keeps its width
and the order of its bits: only the functions of its gates are simplified. Pass-through gates
cannot be skipped in the graph (a LogicLayer reads only the layer before it); the C lowering
removes them. Trained `logits` are dropped from every rewritten layer: the optimised graph is
for inference (keep the original for fine-tuning).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .graph import Graph, edge_port
from .kinds import GroupSum, LogicLayer

# A two-input function is a truth table t[2u + v] = f(a=u, b=v), i.e. GATE_TABLE's row order;
# its difflogic gate id is t0 t1 t2 t3 read as a 4-bit number from the high bit down.
_WEIGHTS = np.array([8, 4, 2, 1], np.int64)
_TABLES = np.array([[(g >> k) & 1 for k in (3, 2, 1, 0)] for g in range(16)], np.uint8)
_A, _NOT_A, _FALSE, _TRUE = 3, 12, 0, 15


@dataclasses.dataclass
class _Bits:
    """How each output bit of a layer is seen by its readers: constant (const >= 0) or the new
    layer's bit `ref` XOR `neg`."""

    const: np.ndarray  # int8: -1 = not constant, else 0 / 1
    ref: np.ndarray    # int64 index into the (new) layer's outputs
    neg: np.ndarray    # uint8

    @classmethod
    def identity(cls, n: int) -> "_Bits":
        return cls(np.full(n, -1, np.int8), np.arange(n, dtype=np.int64), np.zeros(n, np.uint8))


def _simplify(layer: LogicLayer, src: _Bits):
    """Rewrite each gate over the source's new bits. Returns (table (n, 4), ka, kb, uses_a,
    uses_b): the truth table over (ka, kb) with constants substituted, negations absorbed and a
    repeated operand merged."""
    a, b = layer.a.astype(np.int64), layer.b.astype(np.int64)
    t = _TABLES[layer.gate.astype(np.int64)].copy()
    neg_a, neg_b = src.neg[a].astype(bool), src.neg[b].astype(bool)
    t[neg_a] = t[neg_a][:, [2, 3, 0, 1]]
    t[neg_b] = t[neg_b][:, [1, 0, 3, 2]]
    ca, cb = src.const[a], src.const[b]
    for c in (0, 1):  # f(c, v) for every u; f(u, c) for every v
        m = ca == c
        t[m] = t[m][:, [2 * c, 2 * c + 1, 2 * c, 2 * c + 1]]
        m = cb == c
        t[m] = t[m][:, [c, c, 2 + c, 2 + c]]
    ka, kb = src.ref[a], src.ref[b]
    same = (ca < 0) & (cb < 0) & (ka == kb)
    t[same] = t[same][:, [0, 0, 3, 3]]  # f(u, u), now a function of a alone
    uses_a = (t[:, 0] != t[:, 2]) | (t[:, 1] != t[:, 3])
    uses_b = (t[:, 0] != t[:, 1]) | (t[:, 2] != t[:, 3])
    return t, ka, kb, uses_a, uses_b


def _gate_id(t: np.ndarray) -> np.ndarray:
    return (t.astype(np.int64) @ _WEIGHTS).astype(np.uint8)


def _exact_gates(t, ka, kb, uses_a, uses_b):
    """(gate, a, b) computing exactly the tables, in place (a layer whose bits others see)."""
    gate = _gate_id(t).astype(np.int64)
    a, b = ka.copy(), kb.copy()
    only_b = uses_b & ~uses_a
    a[only_b] = kb[only_b]  # a function of b alone: rewrite as f(a=b)
    gate[only_b] = np.where(t[only_b, 0] == 1, _NOT_A, _A)
    only_a = uses_a & ~uses_b
    b[only_a] = ka[only_a]
    gate[only_a] = np.where(t[only_a, 0] == 1, _NOT_A, _A)
    const = ~uses_a & ~uses_b
    gate[const] = np.where(t[const, 0] == 1, _TRUE, _FALSE)
    a[const] = b[const] = 0
    return gate.astype(np.uint8), a, b


def _canonical_gates(t, ka, kb, uses_a, uses_b):
    """Positive, operand-ordered gates plus how the old bits map onto them: (gate, a, b, bits)
    with duplicates merged (a layer only LogicLayers read, so its readers absorb negations)."""
    n = t.shape[0]
    const = ~uses_a & ~uses_b
    unary_b = uses_b & ~uses_a
    ka = np.where(unary_b, kb, ka)
    unary = uses_a ^ uses_b
    neg = t[:, 0].copy()  # factor f(0, 0) out: every kept gate has f(0, 0) = 0
    t = t ^ neg[:, None]
    swap = uses_a & uses_b & (ka > kb)
    t[swap] = t[swap][:, [0, 2, 1, 3]]
    lo, hi = np.where(swap, kb, ka), np.where(swap, ka, kb)
    gate = np.where(unary, _A, _gate_id(t)).astype(np.int64)
    hi = np.where(unary, lo, hi)
    keep = ~const
    keys = np.stack([gate[keep], lo[keep], hi[keep]], 1)
    uniq, inverse = (np.unique(keys, axis=0, return_inverse=True) if keys.size
                     else (np.zeros((0, 3), np.int64), np.zeros(0, np.int64)))
    bits = _Bits(np.where(const, t[:, 0] ^ neg, -1).astype(np.int8), np.zeros(n, np.int64),
                 np.where(const, 0, neg).astype(np.uint8))
    bits.ref[keep] = inverse.reshape(-1)
    return uniq[:, 0].astype(np.uint8), uniq[:, 1], uniq[:, 2], bits


def _fold_into_group_sum(layer: LogicLayer, gs: GroupSum):
    """Drop as many constant bits from every group as the poorest group has; constant ones go
    into beta. Returns (layer, group sum), unchanged when nothing folds exactly."""
    beta = float(gs.beta)
    n = layer.gate.size
    if n % gs.k or beta != round(beta) or abs(beta) + n >= 2 ** 24:
        return layer, gs
    m = n // gs.k
    groups = layer.gate.reshape(gs.k, m)
    r0 = int((groups == _FALSE).sum(1).min())
    r1 = int((groups == _TRUE).sum(1).min())
    if r0 + r1 == 0 or r0 + r1 == m:
        return layer, gs
    keep = np.ones((gs.k, m), bool)
    for g, r in ((_FALSE, r0), (_TRUE, r1)):
        if r:
            pos = np.argsort(groups != g, axis=1, kind="stable")[:, :r]  # the first r in each group
            np.put_along_axis(keep, pos, False, axis=1)
    keep = keep.reshape(-1)
    return (LogicLayer(layer.a[keep], layer.b[keep], layer.gate[keep], metadata=layer.metadata),
            dataclasses.replace(gs, beta=beta + r1))


def optimize(graph: Graph) -> Graph:
    """An equivalent graph with fewer logic gates (see the module docstring). The input graph is
    not changed; node names, edges and every other node are kept."""
    g = graph.flattened()
    order, recurrent = g.order()
    preds = {n: [e for e in g.edges if e[1] == n] for n in g.nodes}
    succs = {n: [e for e in g.edges if e[0] == n] for n in g.nodes}

    def chained(name):  # a LogicLayer fed by exactly one plain edge
        return (isinstance(g.nodes[name], LogicLayer) and len(preds[name]) == 1
                and edge_port(preds[name][0]) == "input" and preds[name][0] not in recurrent)

    links = {n for n in order if chained(n)}
    # layers whose bits only chained LogicLayers see: free to renumber, negate and shrink
    private = {n for n in links if succs[n] and all(e[1] in links and e not in recurrent
                                                    for e in succs[n])}
    bits: dict[str, _Bits] = {}
    new: dict[str, list] = {}  # name -> [gate, a, b]
    for name in order:
        if name not in links:
            continue
        layer, src = g.nodes[name], preds[name][0][0]
        src_bits = bits.get(src) or _Bits.identity(int(max(layer.a.max(initial=0),
                                                            layer.b.max(initial=0))) + 1)
        simplified = _simplify(layer, src_bits)
        if name in private:
            gate, a, b, bits[name] = _canonical_gates(*simplified)
        else:
            gate, a, b = _exact_gates(*simplified)
        new[name] = [gate, a, b]
    # dead gates: walk back from the layers others see; a private layer keeps what is read
    for name in reversed(order):
        if name not in private:
            continue
        live = np.zeros(len(new[name][0]), bool)
        for e in succs[name]:
            gate, a, b = new[e[1]]
            used = (gate != _FALSE) & (gate != _TRUE)
            live[a[used]] = True
            live[b[used]] = True
        if not live.any():
            live[:1] = True  # a layer keeps one gate (its readers are all constant)
        renumber = np.cumsum(live) - 1
        gate, a, b = new[name]
        new[name] = [gate[live], a[live], b[live]]
        for e in succs[name]:
            rg, ra, rb = new[e[1]]
            const = (rg == _FALSE) | (rg == _TRUE)
            new[e[1]] = [rg, np.where(const, 0, renumber[ra]), np.where(const, 0, renumber[rb])]
    out = Graph(metadata=graph.metadata)
    nodes = dict(g.nodes)
    for name, (gate, a, b) in new.items():
        old = g.nodes[name]
        if (np.array_equal(gate, old.gate) and np.array_equal(a, old.a)
                and np.array_equal(b, old.b)):
            continue
        nodes[name] = LogicLayer(a.astype(np.int64), b.astype(np.int64), gate,
                                 metadata=old.metadata)
    for name, node in g.nodes.items():
        if isinstance(node, GroupSum) and len(preds[name]) == 1:
            src = preds[name][0][0]
            if src in links and len(succs[src]) == 1:
                nodes[src], nodes[name] = _fold_into_group_sum(nodes[src], node)
    for name, node in nodes.items():
        out.add(name, node)
    for e in g.edges:
        out.connect(*e)
    return out


def gate_count(graph: Graph) -> dict[str, int]:
    """Gates per logic node (LogicLayer: its width; LogicTree2d: kernels x tree gates)."""
    counts = {}
    for name, node in graph.flattened().nodes.items():
        if isinstance(node, LogicLayer):
            counts[name] = int(node.gate.size)
        elif hasattr(node, "gates") and hasattr(node, "leaves"):
            counts[name] = int(node.gates.size)
    return counts
