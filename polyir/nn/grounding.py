"""Grounding a RuleSet: a small Datalog engine over integer-coded facts, in numpy.

Every relation is an int64 table whose column 0 is the sample (a batch of samples grounds as one
block-diagonal program: constants of different samples never join) and whose other columns are
the atom's constants; joins, de-duplication and membership are the one-pass keyed primitives of
polyir.nn.relations. No relation is sorted more than once per join, and groundings are
de-duplicated only where a rule can produce duplicates (a variable that neither the head nor a
visible literal shows).

`Engine.ground` computes the least model stratum by stratum (negation as failure needs the
negated predicate complete first; a negative edge inside a recursive component is refused), with
semi-naive iteration inside recursive components, then the groundings of every rule as index
arrays (head atom, one row per visible body literal) that RuleLayer gathers and scatters along.
Hidden literals only restrict the matches, as do negated literals and built-ins. Recursive
components are ordered over their ground atoms: an atom's level is one more than the highest
level of the atoms of its own component its groundings read, atoms are stored level by level, and
RuleLayer evaluates one level at a time. A ground network with a cycle (path(a, b) needing
path(a, b)) has no such order and is refused, naming the cycle.

A head variable no positive literal binds, and a variable of a template fact, range over the
sample's active domain: the constants of its input facts.

`GroundingCache` (polyir.nn.grounding_cache) keeps groundings by a hash of the relational
structure, so a batch that repeats (every epoch) is grounded once.
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np

from ..ir import GraphError
from ..ir.kinds.rules import RuleSet, is_variable
from .grounding_cache import GroundingCache, structure_key
from .progress import Progress
from .relations import (I64, builtin_mask, distinct, distinct_cols, encode, find_rows,
                        has_duplicates, join_indices, member, rows_of, spread, unique_keys,
                        unique_rows)

@dataclasses.dataclass
class RuleGrounding:
    """Groundings of one rule (sorted by head in a recursive component, so that each level is a
    slice): head[g] is the head atom's row, body[k][g] the row of the k-th visible literal (in
    `visible` order: positions in rule.body)."""

    head: np.ndarray
    visible: list
    body: list
    group: np.ndarray | None = None  # softmax aggregation: each head atom's softmax group


@dataclasses.dataclass
class Grounding:
    """The result of grounding a batch: every predicate's atoms (int table, column 0 the
    sample), each rule's groundings, each template fact's atom rows, each query's atom row per
    sample (-1: underivable), the derived predicates' components in evaluation order, and per
    predicate the row bounds of its levels ([0, n] unless recursive)."""

    batch_size: int
    atoms: dict
    rules: list
    facts: list
    queries: list
    strata: list
    levels: dict
    heads: list
    _torch: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def order(self) -> list:
        return [p for comp in self.strata for p in comp]

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
                "facts": [t(f) for f in self.facts],
                "groups": [None if g.group is None else t(g.group) for g in self.rules],
                "queries": [t(q) for q in self.queries],
                "n_atoms": {p: len(a) for p, a in self.atoms.items()},
            }
        return self._torch[key]


class Engine:
    """Grounds one RuleSet; `constants` maps the rules' non-integer constants to ints."""

    def __init__(self, ruleset: RuleSet, constants: dict | None = None, name: str | None = None):
        self.rs = ruleset
        self.name = name
        self.constants = dict(constants or {})
        self.preds = {p.name: p for p in ruleset.predicates}
        self.inputs = [p.name for p in ruleset.predicates if p.input]
        self.by_head = collections.defaultdict(list)
        for i, r in enumerate(ruleset.rules):
            self.by_head[r.head].append(i)
        self.facts_of = collections.defaultdict(list)
        for i, f in enumerate(ruleset.facts):
            self.facts_of[f.predicate].append(i)
        self.strata = self._stratify()
        for comp, rec in self.strata:
            for p in comp:
                for i in self.by_head[p]:
                    if rec and ruleset.rules[i].aggregation == "softmax":
                        raise GraphError(f"rule {i} ({p}): a softmax aggregation inside a "
                                         "recursive component", node=name, field="rules",
                                         fix="derive the normalised predicate outside the "
                                             "recursion")
        self.may_repeat = [self._may_repeat(r) for r in ruleset.rules]
        self.needs_domain = any(is_variable(t) for f in ruleset.facts for t in f.terms) or any(
            self._unbound_head(r) for r in ruleset.rules)

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

        def visit(v):  # Tarjan; rule sets are small
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

    def _unbound_head(self, r) -> set:
        bound = {t for lit in r.body if not lit.negated and not lit.predicate.startswith("@")
                 for t in lit.terms if is_variable(t)}
        bound |= {lit.terms[1] for lit in r.body if lit.predicate == "@next"}
        return {t for t in r.head_terms if is_variable(t)} - bound

    def _may_repeat(self, r) -> bool:
        """Whether two groundings of r can have the same head and visible atoms: only when a
        variable of a positive literal shows in neither the head nor a visible literal."""
        shown = {t for t in r.head_terms if is_variable(t)}
        for lit in self.rs.visible(r):
            shown |= {t for t in lit.terms if is_variable(t)}
        used = {t for lit in r.body if not lit.negated for t in lit.terms if is_variable(t)}
        return bool(used - shown)

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
        keep = None
        cols = {}
        for k, t in enumerate(terms):
            c = rel[:, 1 + k]
            if not is_variable(t):
                cond = c == self.const(t)
            elif t in cols:
                cond = c == rel[:, cols[t]]
            else:
                cols[t] = 1 + k
                continue
            keep = cond if keep is None else keep & cond
        rows = None if keep is None else np.flatnonzero(keep)
        return rows, cols

    @staticmethod
    def _col(rel, rows, c):
        """Column c of the matched rows (a view when every row matched)."""
        return rel[:, c] if rows is None else rel[rows, c]

    def _term(self, t, binds, n):
        return binds[t] if is_variable(t) else np.full(n, self.const(t), I64)

    def eval_rule(self, i: int, rels: dict, domain, delta: dict | None = None,
                  delta_pos: int = -1):
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
                sample = self._col(rel, rows, 0)
                binds = {v: self._col(rel, rows, c) for v, c in cols.items()}
                src = {j: np.arange(len(rel), dtype=I64) if rows is None else rows}
                continue
            shared = [v for v in cols if v in binds]
            kl, kr, size = encode([sample] + [binds[v] for v in shared],
                                  [self._col(rel, rows, 0)] +
                                  [self._col(rel, rows, cols[v]) for v in shared])
            li, ri = join_indices(kl, kr, size)
            del kl, kr
            sample = sample[li]
            binds = {v: c[li] for v, c in binds.items()}
            src = {k: s[li] for k, s in src.items()}
            del li
            picked = ri if rows is None else rows[ri]
            for v, c in cols.items():
                if v not in binds:
                    binds[v] = rel[picked, c]
            src[j] = picked
        n = len(sample)
        keep = np.ones(n, bool)
        for lit in r.body:
            if lit.predicate.startswith("@"):
                a = lit.terms
                if lit.predicate == "@next" and is_variable(a[1]) and a[1] not in binds:
                    binds[a[1]] = self._term(a[0], binds, n) + 1
                    continue
                keep &= builtin_mask(lit.predicate, [self._term(t, binds, n) for t in a], n)
        for lit in r.body:
            if lit.negated:
                rel = rels[lit.predicate]
                rows, _ = self._match(rel, lit.terms)
                left = [sample] + [self._term(t, binds, n) for t in lit.terms]
                right = [self._col(rel, rows, k) for k in range(1 + len(lit.terms))]
                kl, kr, size = encode(left, right)
                keep &= ~member(kl, kr, size)
        if not keep.all():
            sample = sample[keep]
            binds = {v: c[keep] for v, c in binds.items()}
            src = {k: s[keep] for k, s in src.items()}
        for v in sorted({t for t in r.head_terms if is_variable(t)} - set(binds)):
            sample, binds, src = spread(domain, sample, binds, src, v)
        return binds, sample, src

    def head_cols(self, i: int, binds, sample) -> list:
        n = len(sample)
        return [sample] + [self._term(t, binds, n) for t in self.rs.rules[i].head_terms]

    def head_rows(self, i: int, binds, sample) -> np.ndarray:
        r = self.rs.rules[i]
        n = len(sample)
        cols = [sample] + [self._term(t, binds, n) for t in r.head_terms]
        return np.stack(cols, 1) if n else np.zeros((0, 1 + len(r.head_terms)), I64)

    def fact_rows(self, k: int, domain, batch_size: int) -> np.ndarray:
        """The atoms template fact k holds for: every sample, variables over its domain."""
        f = self.rs.facts[k]
        sample = np.arange(batch_size, dtype=I64)
        binds: dict = {}
        for v in dict.fromkeys(t for t in f.terms if is_variable(t)):
            sample, binds, _ = spread(domain, sample, binds, {}, v)
        n = len(sample)
        cols = [sample] + [self._term(t, binds, n) for t in f.terms]
        return np.stack(cols, 1)

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
            table = np.empty((len(sample), 1 + p.arity), I64)
            table[:, 0] = sample
            table[:, 1:] = args
            if len(table) > 1:
                key, _, size = encode(list(table.T))
                if has_duplicates(key, size):
                    raise GraphError(f"{name}: the same fact is given twice in one sample",
                                     node=self.name, field=name, fix="give each fact once")
            rels[name] = table
        return rels

    def active_domain(self, rels: dict):
        """(sample, constant) pairs, distinct, sorted by sample: the constants of each sample's
        input facts."""
        parts = [np.stack([t[:, 0], t[:, 1 + k]], 1) for t in rels.values()
                 for k in range(t.shape[1] - 1)]
        if not parts:
            return np.zeros((0, 2), I64)
        return unique_rows(np.concatenate(parts))[0]

    def ground(self, facts: dict, batch_size: int, progress: bool | None = None) -> Grounding:
        """Atoms, groundings (merged per the rules), template-fact rows and query rows for a
        batch of samples. `facts[name] = (sample (m,), args (m, arity))` for every input."""
        steps = len(self.rs.rules) + len(self.strata) + 1
        bar = Progress(steps, progress)
        try:
            return self._ground(facts, batch_size, bar)
        finally:
            bar.close()

    def _ground(self, facts, batch_size, bar) -> Grounding:
        rels = self.input_relations(facts, batch_size)
        bar.step("input facts")
        domain = self.active_domain(rels) if self.needs_domain else None
        raw: dict = {}
        fact_rows: dict = {}
        levels: dict = {}
        for comp, rec in self.strata:
            bar.step(", ".join(comp))
            seeds = {p: [self.fact_rows(k, domain, batch_size) for k in self.facts_of[p]]
                     for p in comp}
            if not rec:
                p = comp[0]
                # template facts first, then each rule's heads, as columns (no row tables)
                heads = [list(rows.T) for rows in seeds[p]]
                for i in self.by_head[p]:
                    binds, sample, src = self.eval_rule(i, rels, domain)
                    heads.append(self.head_cols(i, binds, sample))
                    del binds, sample
                    raw[i] = src
                    bar.step(f"rule {i} ({p})")
                rels[p], inv = distinct_cols(heads, self.preds[p].arity)
                bounds = np.cumsum([0] + [len(h[0]) for h in heads])
                for n, k in enumerate(self.facts_of[p]):
                    fact_rows[k] = inv[bounds[n]:bounds[n + 1]]
                for n, i in enumerate(self.by_head[p], start=len(seeds[p])):
                    raw[i] = (inv[bounds[n]:bounds[n + 1]], raw[i])
                levels[p] = np.array([0, len(rels[p])], I64)
                del heads, inv
                continue
            self._fixpoint(comp, rels, domain, seeds)
            for p in comp:
                for k, rows in zip(self.facts_of[p], seeds[p]):
                    fact_rows[k] = rows_of(rows, rels[p])
            rules = [i for p in comp for i in self.by_head[p]]
            for i in rules:
                binds, sample, src = self.eval_rule(i, rels, domain)
                raw[i] = (rows_of(self.head_rows(i, binds, sample),
                                   rels[self.rs.rules[i].head]), src)
                bar.step(f"rule {i} ({self.rs.rules[i].head})")
            self._order_levels(comp, rels, raw, fact_rows, levels)
        rules = []
        recursive = {p for comp, rec in self.strata if rec for p in comp}
        for i, r in enumerate(self.rs.rules):
            head, src = raw[i]
            raw[i] = None
            visible = [j for j, lit in enumerate(r.body)
                       if not (lit.hidden or lit.negated or lit.predicate.startswith("@"))]
            body = [src[j] for j in visible]
            if r.merge_duplicates and self.may_repeat[i] and len(head):
                table = np.stack([head] + body, 1)
                table, _ = unique_rows(table)
                head, body = table[:, 0], [table[:, 1 + k] for k in range(len(body))]
            if r.head in recursive and len(head) and (head[1:] < head[:-1]).any():
                order = np.argsort(head, kind="stable")  # levels are slices of the groundings
                head, body = head[order], [b[order] for b in body]
            rules.append(RuleGrounding(np.ascontiguousarray(head), visible,
                                       [np.ascontiguousarray(b) for b in body],
                                       self._softmax_groups(r, rels[r.head])))
        queries = []
        for q in self.rs.queries:
            rel = rels[q.predicate]
            rows, _ = self._match(rel, q.terms)
            rows = np.arange(len(rel), dtype=I64) if rows is None else rows
            out = np.full(batch_size, -1, I64)
            out[rel[rows, 0]] = rows
            queries.append(out)
        return Grounding(batch_size, rels, rules,
                         [fact_rows[k] for k in range(len(self.rs.facts))], queries,
                         [comp for comp, _ in self.strata], levels,
                         [r.head for r in self.rs.rules])

    def _softmax_groups(self, r, atoms):
        """For a softmax aggregation: each head atom's group, the atoms that agree on the
        sample and every head term not in agg_terms."""
        if r.aggregation != "softmax":
            return None
        cols = [atoms[:, 0]] + [atoms[:, 1 + k] for k, t in enumerate(r.head_terms)
                                if t not in r.agg_terms]
        key, _, size = encode(cols)
        return unique_keys(key, size)[1]

    def _fixpoint(self, comp, rels, domain, seeds):
        """Semi-naive iteration: each round joins only with the atoms new in the last one."""
        for p in comp:
            rels[p] = np.zeros((0, 1 + self.preds[p].arity), I64)
        rules = [i for p in comp for i in self.by_head[p]]
        new = collections.defaultdict(list)
        for p in comp:
            new[p].extend(seeds[p])
        for i in rules:
            binds, sample, _ = self.eval_rule(i, rels, domain)
            new[self.rs.rules[i].head].append(self.head_rows(i, binds, sample))
        while True:
            delta = {}
            for p in comp:
                cand = distinct(new[p], self.preds[p].arity)[0]
                if len(cand) and len(rels[p]):
                    kc, ko, size = encode(list(cand.T), list(rels[p].T))
                    cand = cand[~member(kc, ko, size)]
                delta[p] = cand
                rels[p] = np.concatenate([rels[p], cand])
            if not any(len(d) for d in delta.values()):
                break
            new = collections.defaultdict(list)
            for i in rules:
                r = self.rs.rules[i]
                for j, lit in enumerate(r.body):
                    if lit.predicate in comp and not lit.negated and len(delta[lit.predicate]):
                        binds, sample, _ = self.eval_rule(i, rels, domain, delta, j)
                        new[r.head].append(self.head_rows(i, binds, sample))
        for p in comp:
            rels[p] = unique_rows(rels[p])[0]

    def _order_levels(self, comp, rels, raw, fact_rows, levels):
        """Give every atom of a recursive component its level (Kahn's algorithm, one frontier
        at a time), store the atoms level by level and renumber every index into them."""
        offset, total = {}, 0
        for p in comp:
            offset[p] = total
            total += len(rels[p])
        src, dst = [], []
        for p in comp:
            for i in self.by_head[p]:
                r = self.rs.rules[i]
                head, body = raw[i]
                for j, lit in enumerate(r.body):
                    if lit.predicate in comp and j in body and not lit.hidden:
                        src.append(body[j] + offset[lit.predicate])
                        dst.append(head + offset[p])
        src = np.concatenate(src) if src else np.zeros(0, I64)
        dst = np.concatenate(dst) if dst else np.zeros(0, I64)
        level = np.full(total, -1, I64)
        indeg = np.bincount(dst, minlength=total)
        order = np.argsort(src, kind="stable")
        start = np.zeros(total + 1, I64)
        np.cumsum(np.bincount(src, minlength=total), out=start[1:])
        frontier = np.flatnonzero(indeg == 0)
        depth = 0
        while len(frontier):
            level[frontier] = depth
            cnt = start[frontier + 1] - start[frontier]
            first = np.repeat(np.cumsum(cnt) - cnt, cnt)
            edges = order[np.repeat(start[frontier], cnt) +
                          (np.arange(int(cnt.sum()), dtype=I64) - first)]
            hit = dst[edges]
            indeg -= np.bincount(hit, minlength=total)
            touched = np.unique(hit)
            frontier = touched[indeg[touched] == 0]
            depth += 1
        if (level < 0).any():
            cycle = self._cycle(level, src, dst, comp, rels, offset)
            raise GraphError(f"the ground network is cyclic: {cycle}", node=self.name,
                             field="rules",
                             fix="the facts make a recursive rule depend on itself (e.g. a cycle "
                                 "in the edges of a path rule); break the cycle in the data or "
                                 "unroll the recursion into a fixed number of layers")
        for p in comp:
            lv = level[offset[p]:offset[p] + len(rels[p])]
            perm = np.argsort(lv, kind="stable")
            rank = np.empty_like(perm)
            rank[perm] = np.arange(len(perm), dtype=I64)
            rels[p] = rels[p][perm]
            counts = np.bincount(lv, minlength=depth)
            levels[p] = np.concatenate([[0], np.cumsum(counts)]).astype(I64)
            for i in self.by_head[p]:
                raw[i] = (rank[raw[i][0]], raw[i][1])
            for k in self.facts_of[p]:
                fact_rows[k] = rank[fact_rows[k]]
            for q in comp:
                for i in self.by_head[q]:
                    r = self.rs.rules[i]
                    for j, lit in enumerate(r.body):
                        if lit.predicate == p and j in raw[i][1]:
                            raw[i][1][j] = rank[raw[i][1][j]]

    def _cycle(self, level, src, dst, comp, rels, offset) -> str:
        """One cycle among the atoms left without a level, as text."""
        left = level < 0
        keep = left[src] & left[dst]
        into = {}
        for s, d in zip(src[keep].tolist(), dst[keep].tolist()):
            into.setdefault(d, s)
        atom = int(np.flatnonzero(left)[0])
        seen = []
        while atom not in seen:
            seen.append(atom)
            atom = into[atom]
        cyc = seen[seen.index(atom):] + [atom]
        names = {v: k for k, v in self.constants.items()}

        def text(a):
            for p in reversed(comp):
                if a >= offset[p]:
                    row = rels[p][a - offset[p]]
                    args = ", ".join(str(names.get(int(c), int(c))) for c in row[1:])
                    return f"{p}({args})" + (f" in sample {int(row[0])}" if row[0] else "")
            return str(a)
        return " <- ".join(text(a) for a in cyc) + " (each needs the next)"


__all__ = ["Engine", "Grounding", "RuleGrounding", "GroundingCache", "structure_key",
           "join_indices", "unique_rows", "encode", "unique_keys", "find_rows", "Progress"]
