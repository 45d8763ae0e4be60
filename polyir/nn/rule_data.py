"""Data for relational rules, PyNeuraLogic-style: samples of facts written as atoms, with
named constants (strings or ints) and values, each with its own queries, and datasets of many
samples that a RuleLayer evaluates as one batch.

This module only holds and encodes data; rule sets are written with `polyir.nn.rule_builder`,
evaluated by `polyir.nn.rules.RuleLayer`.

    from polyir.nn.rule_builder import R
    from polyir.nn.rule_data import Dataset, Sample
    s = Sample(R.h("alice")[1.0],                      # the query, with its target value
               [R.feat("alice")[[0.5, 1.0]], R.feat("bob")[[2.0, 0.0]],
                R.edge("alice", "bob"), R.edge("bob", "alice")[0.3]])
    ds = Dataset([s, ...])
    out = layer(ds)            # (number of queries, dim): every sample's queries in order
    loss = ((out - ds.targets()) ** 2).mean()
    for batch in ds.batches(64): ...

A fact's value may be a number, a list, an array or a torch tensor (a tensor keeps its
gradient: this is how torch layers feed a RuleLayer inside a model); a fact without a value is
1.0. Constants are matched by their text: `R.e(1)` and `R.e("1")` name the same constant. An
input predicate a sample has no facts of is an empty relation.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from ..ir import GraphError
from ..ir.kinds.rules import is_variable
from .rule_builder import Atom


def _atoms(items, what: str) -> list:
    if items is None:
        return []
    if isinstance(items, Atom):
        items = [items]
    out = list(items)
    for a in out:
        if not isinstance(a, Atom) or a.special or a.negated or a.hidden:
            raise GraphError(f"{what} must be plain atoms R.name(constants)[value], got {a!r}",
                             field=what, fix="write R.edge('a', 'b') or R.feat(1)[[0.5, 2.0]]")
        if any(isinstance(t, str) and is_variable(t) for t in a.terms):
            raise GraphError(f"{what} {a} has a variable (a term starting upper-case or '_')",
                             field=what, fix="sample facts and queries are ground: use "
                                             "lower-case names or ints for constants")
    return out


def _value(atom: Atom):
    """The atom's value as given (a tensor keeps its gradient), or None."""
    w = atom.weight
    if w is None:
        return None
    if w.value is None:
        raise GraphError(f"{atom}: a sample fact needs a value, not dimensions {w.dims}",
                         field="facts", fix="give the value: R.a(1)[[0.5, 1.0]]")
    return w.value


class Sample:
    """One example: its facts and its queries (atoms, optionally with target values as
    `R.h(1)[1.0]`). Without queries, the rule set's own queries apply. PyNeuraLogic's argument
    order: `Sample(query, facts)`."""

    def __init__(self, queries=None, facts=()):
        self.queries = _atoms(queries, "queries")
        self.facts = _atoms(facts, "facts")

    def __repr__(self):
        return f"Sample({len(self.queries)} queries, {len(self.facts)} facts)"


class Dataset:
    """Many samples, evaluated as one batch (block-diagonal: constants of different samples
    never join)."""

    def __init__(self, samples=()):
        self.samples = list(samples)

    def add(self, queries=None, facts=()):
        self.samples.append(Sample(queries, facts))
        return self

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return Dataset(self.samples[item])
        return self.samples[item]

    def batches(self, size: int, shuffle: bool = False, seed: int = 0):
        """Datasets of `size` samples (the last may be smaller)."""
        order = np.arange(len(self.samples))
        if shuffle:
            np.random.default_rng(seed).shuffle(order)
        for i in range(0, len(order), size):
            yield Dataset([self.samples[j] for j in order[i:i + size]])

    def targets(self, dtype=torch.float32) -> torch.Tensor:
        """The queries' target values, (number of queries, dim), in `layer(dataset)`'s order."""
        rows = []
        for s in self.samples:
            for q in s.queries:
                v = _value(q)
                if v is None:
                    raise GraphError(f"query {q} has no target value", field="queries",
                                     fix="write the target as R.h(1)[1.0]")
                rows.append(torch.as_tensor(v, dtype=dtype).reshape(-1))
        return torch.stack(rows) if rows else torch.zeros((0, 1), dtype=dtype)


def as_dataset(x) -> Dataset | None:
    if isinstance(x, Dataset):
        return x
    if isinstance(x, Sample):
        return Dataset([x])
    return None


class Vocabulary:
    """Constant text -> int code: ints (and int-like text) are themselves; other names get the
    codes the layer gave the rules' constants, new ones codes below all of those."""

    def __init__(self, constants: dict):
        self.codes = dict(constants)
        self.next = min([0] + list(self.codes.values())) - 1

    def __call__(self, term) -> int:
        if isinstance(term, (numbers.Integral, np.integer)) and not isinstance(term, bool):
            return int(term)
        text = str(term)
        try:
            return int(text)
        except ValueError:
            pass
        code = self.codes.get(text)
        if code is None:
            code = self.codes[text] = self.next
            self.next -= 1
        return code


def encode(dataset: Dataset, preds: dict, inputs: list, constants: dict, dtype, device):
    """The layer's batched input form {pred: (values, args, sample)} for a dataset, and each
    query as (sample, predicate, int args)."""
    vocab = Vocabulary(constants)
    grouped = {name: ([], [], []) for name in inputs}
    for s_i, sample in enumerate(dataset.samples):
        for a in sample.facts:
            if a.name not in grouped:
                raise GraphError(f"sample {s_i}: {a.name}/{len(a.terms)} is not an input "
                                 f"predicate of the rules (inputs: {inputs})", field="facts",
                                 fix="give facts of the input predicates only")
            p = preds[a.name]
            if len(a.terms) != p.arity:
                raise GraphError(f"sample {s_i}: {a} has {len(a.terms)} terms, {a.name} takes "
                                 f"{p.arity}", field="facts", fix="fix the fact's arity")
            vals, args, smp = grouped[a.name]
            v = _value(a)
            v = torch.ones(p.dim, dtype=dtype, device=device) if v is None else \
                torch.as_tensor(v).to(dtype=dtype, device=device).reshape(-1)
            if v.numel() == 1 and p.dim > 1:
                raise GraphError(f"sample {s_i}: {a} has one value, {a.name} has dim {p.dim}",
                                 field="facts", fix=f"give {p.dim} values")
            if v.numel() != p.dim:
                raise GraphError(f"sample {s_i}: {a} has {v.numel()} values, {a.name} has dim "
                                 f"{p.dim}", field="facts", fix=f"give {p.dim} values")
            vals.append(v)
            args.append([vocab(t) for t in a.terms])
            smp.append(s_i)
    out = {}
    for name, (vals, args, smp) in grouped.items():
        p = preds[name]
        values = torch.stack(vals) if vals else torch.zeros((0, p.dim), dtype=dtype,
                                                             device=device)
        out[name] = (values, np.asarray(args, np.int64).reshape(len(smp), p.arity),
                     np.asarray(smp, np.int64))
    queries = [(s_i, q.name, [vocab(t) for t in q.terms])
               for s_i, sample in enumerate(dataset.samples) for q in sample.queries]
    return out, queries


__all__ = ["Sample", "Dataset", "Vocabulary", "as_dataset", "encode"]
