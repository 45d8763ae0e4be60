"""Grounding a RuleSet: a small Datalog engine over integer-coded facts, in numpy.

Every relation is an int64 table whose column 0 is the sample (a batch of samples grounds as one
block-diagonal program: constants of different samples never join) and whose other columns are
the atom's constants. `least_model` computes the least model stratum by stratum (negation as
failure needs the negated predicate complete first; a negative edge inside a recursive component
is refused), with semi-naive iteration inside recursive components. `ground` also returns, per
rule, the groundings as index arrays (head atom, one row per visible body literal) that RuleLayer
gathers and scatters along. Identical groundings (same head, same visible body atoms) merge into
one unless the rule has merge_duplicates=False; hidden literals only restrict the matches, as do
negated literals and built-ins (@alldiff, @eq, @neq, @lt, @leq, @gt, @geq).

`GroundingCache` keys groundings by a hash of the relational structure (which facts, not their
values), so a batch that repeats (every epoch) is grounded once.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib

import numpy as np

from ..ir import GraphError
from ..ir.kinds.rules import RuleSet, is_variable

I64 = np.int64


# --------------------------------------------------------------------------------------------
# relational primitives
# --------------------------------------------------------------------------------------------
def _factorize(*cols):
    """One dense int key per row of the given equal-length int columns."""
    key = None
    for c in cols:
        c = np.asarray(c, dtype=I64)
        if key is None:
            _, key = np.unique(c, return_inverse=True)
        else:
            _, inv = np.unique(c, return_inverse=True)
            _, key = np.unique(key * (int(inv.max(initial=0)) + 1) + inv, return_inverse=True)
    return key.reshape(-1)


def _keys(left_cols, right_cols):
    """Dense keys for rows on both sides (so that equal rows get equal keys)."""
    n = len(left_cols[0])
    key = _factorize(*[np.concatenate([a, b]) for a, b in zip(left_cols, right_cols)])
    return key[:n], key[n:]


def join_indices(kl: np.ndarray, kr: np.ndarray):
    """All pairs (i, j) with kl[i] == kr[j], i ascending."""
    order = np.argsort(kr, kind="stable")
    krs = kr[order]
    lo = np.searchsorted(krs, kl, "left")
    hi = np.searchsorted(krs, kl, "right")
    cnt = hi - lo
    total = int(cnt.sum())
    li = np.repeat(np.arange(len(kl), dtype=I64), cnt)
    starts = np.repeat(np.cumsum(cnt) - cnt, cnt)
    ri = order[np.repeat(lo, cnt) + (np.arange(total, dtype=I64) - starts)]
    return li, ri


def unique_rows(table: np.ndarray):
    """(unique rows in first-seen order, inverse index)."""
    if table.shape[0] == 0:
        return table, np.zeros(0, I64)
    key = _factorize(*table.T)
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return table[first[order]], rank[inv.reshape(-1)]


# --------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RuleGrounding:
    """Groundings of one rule: head[g] is the head atom's row, body[k][g] the row of the k-th
    visible literal (in `visible` order: positions in rule.body)."""

    head: np.ndarray
    visible: list
    body: list


@dataclasses.dataclass
class Grounding:
    """The result of grounding a batch: every predicate's atoms (int table, column 0 the
    sample), each rule's groundings, each query's atom row per sample (-1: underivable), and the
    order to evaluate derived predicates in."""

    batch_size: int
    atoms: dict
    rules: list
    queries: list
    order: list
    heads: list
    _torch: dict = dataclasses.field(default_factory=dict, repr=False)

    def torch(self, device):
        """The index arrays as torch tensors on `device` (converted once per device)."""
        import torch
        key = str(device)
        if key not in self._torch:
            t = lambda a: torch.as_tensor(a, dtype=torch.long, device=device)  # noqa: E731
            self._torch[key] = {
                "rules": [(t(g.head), [t(b) for b in g.body],
                           t(np.bincount(g.head, minlength=len(self.atoms[r_head]))))
                          for g, r_head in zip(self.rules, self.heads)],
                "queries": [t(q) for q in self.queries],
                "n_atoms": {p: len(a) for p, a in self.atoms.items()},
            }
        return self._torch[key]


class Engine:
    """Grounds one RuleSet; `constants` maps non-integer constant names in rules to ints."""

    def __init__(self, ruleset: RuleSet, constants: dict | None = None, name: str | None = None):
        self.rs = ruleset
        self.name = name
        self.constants = dict(constants or {})
        self.preds = {p.name: p for p in ruleset.predicates}
        self.inputs = [p.name for p in ruleset.predicates if p.input]
        self.by_head = collections.defaultdict(list)
        for i, r in enumerate(ruleset.rules):
            self.by_head[r.head].append(i)
        self.strata = self._stratify()
        self.recursive = [s for s in self.strata if s[1]]

    # --- analysis ----------------------------------------------------------------------------
    def _stratify(self):
        """Strongly connected components of the derived predicates' dependency graph in
        evaluation order: list of (predicates, recursive)."""
        derived = [p.name for p in self.rs.predicates if not p.input]
        deps = {p: set() for p in derived}
        neg = set()
        for r in self.rs.rules:
            for lit in r.body:
                if lit.predicate in deps:
                    deps[r.head].add(lit.predicate)
                    if lit.negated:
                        neg.add((r.head, lit.predicate))
        index, low, stack, on, comps = {}, {}, [], set(), []
        counter = [0]

        def visit(v):  # Tarjan, iterative enough for rule sets of modest size
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in sorted(deps[v]):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                comps.append(comp)

        for p in derived:
            if p not in index:
                visit(p)
        strata = []
        for comp in comps:  # Tarjan emits components dependencies-first
            comp = [p for p in derived if p in comp]
            rec = len(comp) > 1 or comp[0] in deps[comp[0]]
            for a, b in neg:
                if a in comp and b in comp:
                    raise GraphError(f"{a} depends negatively on {b} inside the recursive "
                                     f"component {comp}: the program is not stratified",
                                     node=self.name, field="rules",
                                     fix="negate only predicates that do not depend on the head")
            strata.append((comp, rec))
        return strata

    def check_nonrecursive(self):
        if self.recursive:
            comp = self.recursive[0][0]
            cycle = " -> ".join(comp + [comp[0]])
            raise GraphError(f"the rules are recursive ({cycle}); RuleLayer evaluates "
                             "non-recursive rule sets", node=self.name, field="rules",
                             fix="unroll the recursion into layers (h1, h2, ...) of distinct "
                                 "predicates")

    def const(self, term: str) -> int:
        try:
            return int(term)
        except ValueError:
            pass
        if term in self.constants:
            return int(self.constants[term])
        raise GraphError(f"constant {term!r} has no integer code", node=self.name,
                         field="rules", fix=f"pass constants={{{term!r}: <int>}} to RuleLayer")

    # --- evaluation of one rule --------------------------------------------------------------
    def _match(self, rel: np.ndarray, terms) -> tuple[np.ndarray, dict]:
        """Rows of `rel` matching the literal's constants and repeated variables, and the
        variable -> column map."""
        keep = np.ones(len(rel), bool)
        cols = {}
        for k, t in enumerate(terms):
            c = rel[:, 1 + k]
            if not is_variable(t):
                keep &= c == self.const(t)
            elif t in cols:
                keep &= c == rel[:, 1 + cols[t]]
            else:
                cols[t] = k
        rows = np.nonzero(keep)[0] if not keep.all() else np.arange(len(rel), dtype=I64)
        return rows, {v: 1 + k for v, k in cols.items()}

    def eval_rule(self, i: int, rels: dict, delta: dict | None = None, delta_pos: int = -1):
        """Join rule i's body over `rels` (literal `delta_pos` over `delta` instead). Returns
        (bindings: var -> column, sample column, src: body position -> row index)."""
        r = self.rs.rules[i]
        pos = [j for j, lit in enumerate(r.body)
               if not lit.negated and not lit.predicate.startswith("@")]
        sample = None
        binds: dict = {}
        src: dict = {}
        for j in pos:
            lit = r.body[j]
            rel = (delta if j == delta_pos else rels)[lit.predicate]
            rows, cols = self._match(rel, lit.terms)
            if sample is None:
                sample = rel[rows, 0]
                binds = {v: rel[rows, c] for v, c in cols.items()}
                src = {j: rows}
                continue
            shared = [v for v in cols if v in binds]
            kl, kr = _keys([sample] + [binds[v] for v in shared],
                           [rel[rows, 0]] + [rel[rows, cols[v]] for v in shared])
            li, ri = join_indices(kl, kr)
            sample = sample[li]
            binds = {v: c[li] for v, c in binds.items()}
            src = {k: s[li] for k, s in src.items()}
            for v, c in cols.items():
                if v not in binds:
                    binds[v] = rel[rows[ri], c]
            src[j] = rows[ri]
        keep = np.ones(len(sample), bool)
        for lit in r.body:
            if lit.predicate.startswith("@"):
                vals = [binds[t] if is_variable(t) else np.full(len(sample), self.const(t), I64)
                        for t in lit.terms]
                keep &= _builtin(lit.predicate, vals, len(sample))
        for lit in r.body:
            if lit.negated:
                rel = rels[lit.predicate]
                rows, cols = self._match(rel, lit.terms)
                if lit.terms:
                    left = [sample] + [binds[t] if is_variable(t) else
                                       np.full(len(sample), self.const(t), I64) for t in lit.terms]
                    right = [rel[rows, 0]] + [rel[rows, 1 + k] for k in range(len(lit.terms))]
                else:
                    left, right = [sample], [rel[rows, 0]]
                kl, kr = _keys(left, right)
                keep &= ~np.isin(kl, kr)
        if not keep.all():
            sample = sample[keep]
            binds = {v: c[keep] for v, c in binds.items()}
            src = {k: s[keep] for k, s in src.items()}
        return binds, sample, src

    def head_rows(self, i: int, binds, sample) -> np.ndarray:
        r = self.rs.rules[i]
        cols = [sample] + [binds[t] if is_variable(t) else np.full(len(sample), self.const(t), I64)
                           for t in r.head_terms]
        return np.stack(cols, 1) if len(sample) else np.zeros((0, 1 + len(r.head_terms)), I64)

    # --- the least model ---------------------------------------------------------------------
    def input_relations(self, facts: dict, batch_size: int) -> dict:
        rels = {}
        for name in self.inputs:
            p = self.preds[name]
            if name not in facts:
                raise GraphError(f"no facts given for input predicate {name!r}", node=self.name,
                                 field=name, fix=f"pass {name} (values, args) or an empty relation")
            sample, args = facts[name]
            sample = np.asarray(sample, I64).reshape(-1)
            args = np.asarray(args, I64).reshape(len(sample), p.arity)
            if len(sample) and (sample.min() < 0 or sample.max() >= batch_size):
                raise GraphError(f"{name}: sample index out of range 0..{batch_size - 1}",
                                 node=self.name, field=name, fix="index samples from 0")
            table = np.concatenate([sample[:, None], args], 1)
            if len(table) > 1 and len(unique_rows(table)[0]) != len(table):
                raise GraphError(f"{name}: the same fact is given twice in one sample",
                                 node=self.name, field=name, fix="give each fact once")
            rels[name] = table
        return rels

    def least_model(self, facts: dict, batch_size: int, keep_groundings: bool = False):
        rels = self.input_relations(facts, batch_size)
        groundings = {}
        for comp, rec in self.strata:
            if not rec:
                p = comp[0]
                heads = []
                for i in self.by_head[p]:
                    binds, sample, src = self.eval_rule(i, rels)
                    heads.append(self.head_rows(i, binds, sample))
                    if keep_groundings:
                        groundings[i] = (heads[-1], src)
                ar = self.preds[p].arity
                allh = np.concatenate(heads) if heads else np.zeros((0, 1 + ar), I64)
                rels[p], inv = unique_rows(allh)
                if keep_groundings:
                    start = 0
                    for i in self.by_head[p]:
                        h, src = groundings[i]
                        groundings[i] = (inv[start:start + len(h)], src)
                        start += len(h)
                continue
            # semi-naive iteration over a recursive component
            for p in comp:
                rels[p] = np.zeros((0, 1 + self.preds[p].arity), I64)
            rules = [i for p in comp for i in self.by_head[p]]
            delta = {}
            new = collections.defaultdict(list)
            for i in rules:
                binds, sample, _ = self.eval_rule(i, rels)
                new[self.rs.rules[i].head].append(self.head_rows(i, binds, sample))
            while True:
                delta = {}
                for p in comp:
                    cand = np.concatenate(new[p]) if new[p] else rels[p][:0]
                    if len(cand):
                        cand = unique_rows(cand)[0]
                        old_k, new_k = _keys(list(rels[p].T), list(cand.T))
                        cand = cand[~np.isin(new_k, old_k)]
                    delta[p] = cand
                    rels[p] = np.concatenate([rels[p], cand])
                if not any(len(d) for d in delta.values()):
                    break
                new = collections.defaultdict(list)
                for i in rules:
                    r = self.rs.rules[i]
                    for j, lit in enumerate(r.body):
                        if lit.predicate in comp and not lit.negated and len(delta[lit.predicate]):
                            binds, sample, _ = self.eval_rule(i, rels, delta, j)
                            new[r.head].append(self.head_rows(i, binds, sample))
            if keep_groundings:
                for p in comp:
                    rels[p] = rels[p][np.lexsort(rels[p].T[::-1])]
                for i in rules:
                    binds, sample, src = self.eval_rule(i, rels)
                    h = self.head_rows(i, binds, sample)
                    hk, ak = _keys(list(h.T), list(rels[self.rs.rules[i].head].T))
                    li, ri = join_indices(hk, ak)
                    groundings[i] = (ri[np.argsort(li)], src)
        return rels, groundings

    def ground(self, facts: dict, batch_size: int) -> Grounding:
        """Atoms, groundings (merged per the rules) and query rows for a batch of samples.
        `facts[name] = (sample (m,), args (m, arity))` for every input predicate."""
        rels, raw = self.least_model(facts, batch_size, keep_groundings=True)
        rules = []
        for i, r in enumerate(self.rs.rules):
            head, src = raw[i]
            visible = [j for j, lit in enumerate(r.body)
                       if not (lit.hidden or lit.negated or lit.predicate.startswith("@"))]
            body = [src[j] for j in visible]
            if r.merge_duplicates and len(head):
                table = np.stack([head] + body, 1)
                table, _ = unique_rows(table)
                head, body = table[:, 0], [table[:, 1 + k] for k in range(len(body))]
            rules.append(RuleGrounding(np.ascontiguousarray(head), visible,
                                       [np.ascontiguousarray(b) for b in body]))
        queries = []
        for q in self.rs.queries:
            rel = rels[q.predicate]
            rows, _ = self._match(rel, q.terms)
            out = np.full(batch_size, -1, I64)
            out[rel[rows, 0]] = rows
            queries.append(out)
        order = [p for comp, _ in self.strata for p in comp]
        return Grounding(batch_size, rels, rules, queries, order,
                         [r.head for r in self.rs.rules])


def _builtin(name: str, vals: list, n: int) -> np.ndarray:
    if name == "@alldiff":
        keep = np.ones(n, bool)
        for a in range(len(vals)):
            for b in range(a + 1, len(vals)):
                keep &= vals[a] != vals[b]
        return keep
    if len(vals) != 2:
        raise GraphError(f"{name} takes 2 terms, got {len(vals)}", field="rules",
                         fix=f"write {name}(A, B)")
    a, b = vals
    return {"@eq": a == b, "@neq": a != b, "@lt": a < b, "@leq": a <= b, "@gt": a > b,
            "@geq": a >= b}[name]


# --------------------------------------------------------------------------------------------
# caching by structure
# --------------------------------------------------------------------------------------------
def structure_key(facts: dict, batch_size: int) -> bytes:
    """A hash of which facts there are (not their values)."""
    h = hashlib.sha256()  # hardware-accelerated on most CPUs: ~0.5 GB/s and more
    h.update(str(batch_size).encode())
    for name in sorted(facts):
        sample, args = facts[name]
        sample = np.ascontiguousarray(sample, I64)
        args = np.ascontiguousarray(args, I64)
        h.update(name.encode() + b"\0" + str(args.shape).encode())
        for a in (sample, args):
            if a.size:
                h.update(memoryview(a.reshape(-1)).cast("B"))
    return h.digest()


class GroundingCache:
    """Least-recently-used groundings keyed by `structure_key`."""

    def __init__(self, engine: Engine, size: int = 64):
        self.engine, self.size = engine, size
        self.store: collections.OrderedDict = collections.OrderedDict()
        self.hits = self.misses = 0

    def __call__(self, facts: dict, batch_size: int, key: bytes | None = None) -> Grounding:
        key = key if key is not None else structure_key(facts, batch_size)
        g = self.store.get(key)
        if g is not None:
            self.hits += 1
            self.store.move_to_end(key)
            return g
        self.misses += 1
        g = self.engine.ground(facts, batch_size)
        self.store[key] = g
        if len(self.store) > self.size:
            self.store.popitem(last=False)
        return g


__all__ = ["Engine", "Grounding", "RuleGrounding", "GroundingCache", "structure_key",
           "join_indices", "unique_rows"]
