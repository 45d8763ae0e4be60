"""Relational rules in torch: `RuleLayer` evaluates an ir.RuleSet (a weighted Datalog program,
PyNeuraLogic >= 0.8 semantics) with gather / matmul / scatter-reduce, batched, its weights
nn.Parameters. This module is the torch layer only: rule sets are written with
`polyir.nn.rule_builder` (R, V, F, Template) or as text, data with `polyir.nn.rule_data`.

Semantics (docs/kinds/rules.md). For a ground head h:
  rule neuron   z = T_rule(Comb_i(w_i * F_i(v(body_i))))  per grounding of rule r with head h
  aggregation   a_r(h) = Agg_r(z over those groundings)  avg by default; max / min pick the whole
                                                          z with the largest / smallest element sum
  atom value    v(h) = T_atom(Comb_h(W_r * a_r(h) over the rules deriving h, template facts))
Defaults: identity transformations, sum combination, avg aggregation, no bias; a fact given
without a value is 1.0; an underivable query is 0.0; a missing weight is 1. A 2-D weight (out, in)
is a matrix product, a scalar or 1-D weight multiplies elementwise. Hidden (*), negated and
built-in literals only decide which groundings exist. The functions are PyNeuraLogic's own
definitions (polyir.nn.rule_functions).

Inputs, one per input predicate (the RuleSet's input ports), in one of the forms:
  propositional   a tensor (batch, dim) for an arity-0 predicate: its value in each sample (the
                  `R.xy[tensor]` of PyNeuraLogic); `layer(x)` when it is the only input
  one sample      (values (m, dim) or None, args (m, arity)) integer constants per fact
  batched         (values (M, dim) or None, args (M, arity), sample (M,)): facts of many samples
                  at once (a batch of graphs); the batch size is `batch_size=` or max(sample)+1
  list            [ {pred: (values, args)}, ... ] one dict per sample
  samples         a polyir.nn.rule_data.Sample or Dataset (facts written as atoms with string
                  or int constants); the output is then one row per query of each sample
Pass them as `layer({"feat": ..., "edge": ...})` or `layer(feat=..., edge=...)`. The output is
(batch, sum of the queries' dims); `layer.atoms(inputs, predicate="h")` gives every derived atom
of a predicate. The relational structure (which facts, not their values) is grounded once and
cached by its hash, so a batch that repeats every epoch grounds once.

Evaluation: component by component of the rules' dependency graph; a recursive component level
by level over its ground atoms (see polyir.nn.grounding). Per rule, each visible literal's values
are gathered along the grounding's index arrays (a 2-D weight is applied before the gather when
that is cheaper), combined, transformed and scatter-reduced onto the head atoms. A rule that is
linear in one literal (identity transformation, sum / avg aggregation, one visible literal or an
elproduct / product whose other factors are 1-dimensional, as in a GCN layer) runs instead as one
CSR sparse product whose transpose for the backward pass is built once per grounding.

A GCN layer h = D^-1/2 (A + I) D^-1/2 X W^T is the rule
    h(X) :- $w={out, in} feat(Y), edge(X, Y). [combination=elproduct, aggregation=sum]
with one edge fact per nonzero of A + I whose value is 1 / sqrt(d_X d_Y): the normalisation is
data, the rule multiplies it into W feat(Y) and sums over the neighbours.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import ir
from ..ir import GraphError
from ..ir.rules_text import format_ruleset, parse_rules
from .grounding import Engine, GroundingCache, find_rows, structure_key
from .rule_data import as_dataset
from .rule_data import encode as encode_dataset
from .rule_functions import (GatherScatter, aggregate, combine, combine_atom, softmax_aggregate,
                             spmm_structure, transform)


class RuleLayer(nn.Module):
    """A RuleSet as a torch layer (see the module docstring).

    `rules`: an ir.RuleSet, a Template, or text (`polyir.ir.rules_text`). `constants` maps the
    rules' non-integer constants to the integer codes used in the inputs' args. `dims`,
    `queries`, `seed`, `dtype` (of the weights written in the text) are used when `rules` is a
    Template or text.
    """

    def __init__(self, rules, *, constants: dict | None = None, dims: dict | None = None,
                 queries=None, seed: int = 0, dtype=np.float32, cache_size: int = 64,
                 name: str | None = None, progress: bool | None = None):
        super().__init__()
        from .rule_builder import Template
        if isinstance(rules, str):
            rules = parse_rules(rules, dims=dims, queries=queries, seed=seed, dtype=dtype)
        elif isinstance(rules, Template):
            rules = rules.build(dims=dims, queries=queries, seed=seed, dtype=dtype)
        if not isinstance(rules, ir.RuleSet):
            raise GraphError(f"RuleLayer takes an ir.RuleSet, a Template or rule text, got "
                             f"{type(rules).__name__}", node=name, field="rules",
                             fix="build the rules with polyir.nn.rule_builder.Template or text")
        rules.validate(name)
        self.name = name
        self.ruleset = rules  # the structure; the live weights are the parameters below
        self.constants = _code_constants(rules, constants or {})
        self.engine = Engine(rules, self.constants, name)
        self.cache = GroundingCache(self.engine, cache_size)
        self.progress = progress
        self.preds = {p.name: p for p in rules.predicates}
        self.input_names = [p.name for p in rules.predicates if p.input]
        for p in rules.predicates:
            if p.input and p.transformation != "identity":
                raise GraphError(f"input predicate {p.name!r} has transformation "
                                 f"{p.transformation!r}; inputs are taken as given", node=name,
                                 field="predicates", fix="transform the values before the layer")
        self._fast = [self._fast_path(r) for r in rules.rules]
        # linear rules with at least `fast_min` groundings run as one sparse product (below it
        # the gather / scatter path costs less); fast=False: always gather / combine / scatter
        self.fast, self.fast_min = True, 1024
        # follows .to()/.double() even when the rules have no weights: inputs are cast to it
        first = next(iter(rules.weights.values()), np.zeros(0, dtype))
        self.register_buffer("dtype_marker", torch.zeros(0, dtype=torch.from_numpy(
            np.zeros(0, first.dtype)).dtype), persistent=False)
        self.weights = nn.ParameterDict()
        self._fixed_names = {}
        for wname, value in rules.weights.items():
            t = torch.as_tensor(np.array(value))
            if wname in rules.fixed:
                attr = f"fixed_{wname}"
                self.register_buffer(attr, t)
                self._fixed_names[wname] = attr
            else:
                self.weights[wname] = nn.Parameter(t)

    def _fast_path(self, r):
        """For a rule that is linear in one body literal (identity transformation, sum / avg
        aggregation, one literal or an elproduct / product whose other factors are
        1-dimensional): the position (among visible literals) of that literal, evaluated as one
        sparse product. Else None (gather, combine, transform, scatter)."""
        visible = self.ruleset.visible(r)
        if r.transformation != "identity" or r.aggregation not in ("sum", "avg"):
            return None
        if len(visible) > 1 and r.combination not in ("elproduct", "product"):
            return None
        dims = []
        for lit in visible:
            d = self.preds[lit.predicate].dim
            if lit.weight is not None:
                w = self.ruleset.weights[lit.weight]
                d = w.shape[0] if w.ndim in (1, 2) else d
            dims.append(d)
        wide = [k for k, d in enumerate(dims) if d > 1]
        carrier = wide[0] if len(wide) == 1 else (0 if not wide else None)
        if carrier is None or visible[carrier].function != "identity":
            return None
        return carrier

    def _literal_values(self, table, idx, lit):
        """F(table[idx]) with the literal's weight applied."""
        if lit.weight is None:
            return transform(lit.function, table[idx])
        w = self.weight(lit.weight)
        if w.dim() == 2:
            if lit.function == "identity" and idx.numel() > table.shape[0]:
                return (table @ w.T)[idx]
            return transform(lit.function, table[idx]) @ w.T
        return transform(lit.function, table[idx]) * w

    def _linear_rule(self, i, r, V, gt, n):
        """The fast path (see `_fast_path`): a_r = S @ table (W applied before or after)."""
        head, body, counts = gt["rules"][i]
        visible = self.ruleset.visible(r)
        carrier = self._fast[i]
        coef = None
        for k, lit in enumerate(visible):
            if k == carrier:
                continue
            part = self._literal_values(V[lit.predicate], body[k], lit)[:, 0]
            coef = part if coef is None else coef * part
        lit = visible[carrier]
        table = V[lit.predicate]
        if r.aggregation == "avg":
            scale = 1.0 / counts.clamp(min=1).to(table.dtype)[head]
            coef = scale if coef is None else coef * scale
        if coef is None:
            coef = table.new_ones(head.shape[0])
        post = None
        if lit.weight is not None:
            w = self.weight(lit.weight)
            if w.dim() == 2 and w.shape[0] <= w.shape[1]:
                table = table @ w.T
            else:
                post = w
        key = ("spmm", i, carrier)
        if key not in gt:
            gt[key] = spmm_structure(head, body[carrier], n, table.shape[0])
        a = GatherScatter.apply(coef, table, gt[key])
        if post is not None:
            a = a @ post.T if post.dim() == 2 else a * post
        return a

    def _rule_value(self, i, V, gt, head, body, counts, n, whole: bool):
        """W_r * a_r for the n head atoms `head` indexes (0..n-1)."""
        r = self.ruleset.rules[i]
        if whole and self._fast[i] is not None and self.fast and head.numel() >= self.fast_min:
            a = self._linear_rule(i, r, V, gt, n)
        else:
            parts = [self._literal_values(V[lit.predicate], body[k], lit)
                     for k, lit in enumerate(self.ruleset.visible(r))]
            z = transform(r.transformation, combine(r.combination, parts))
            if r.aggregation == "softmax":
                a = softmax_aggregate(z, head, gt["groups"][i], n)
            else:
                a = aggregate(r.aggregation, z, head, counts, n)
        if r.weight is not None:
            w = self.weight(r.weight)
            a = a @ w.T if w.dim() == 2 else a * w
        return a

    def _atom_values(self, p, V, g, gt, lo, hi, dtype, device):
        """v(h) for the atoms lo..hi-1 of predicate p (one level of its component)."""
        pred = self.preds[p]
        n = hi - lo
        whole = lo == 0 and hi == gt["n_atoms"][p]
        parts, present = [], []
        for i in self.engine.by_head[p]:
            head, body, counts = gt["rules"][i]
            if not whole:
                g0, g1 = np.searchsorted(g.rules[i].head, [lo, hi])
                head, body = head[g0:g1] - lo, [b[g0:g1] for b in body]
                counts = counts[lo:hi]
            parts.append(self._rule_value(i, V, gt, head, body, counts, n, whole))
            present.append(counts > 0)
        for k in self.engine.facts_of[p]:
            rows = gt["facts"][k]
            rows = rows[(rows >= lo) & (rows < hi)] - lo
            w = self.weight(self.ruleset.facts[k].weight).reshape(-1)
            d = max(w.shape[0], pred.dim)
            parts.append(w.new_zeros((n, d)).index_add_(0, rows, w.expand(len(rows), d)))
            present.append(torch.zeros(n, dtype=torch.bool, device=device).index_fill_(0, rows,
                                                                                         True))
        if not parts:
            return torch.zeros((n, pred.dim), dtype=dtype, device=device)
        return transform(pred.transformation, combine_atom(pred.combination, parts, present))

    # --- IR ------------------------------------------------------------------------------------
    @classmethod
    def from_ir(cls, node: ir.RuleSet, name: str | None = None, **kwargs) -> "RuleLayer":
        """The layer for an ir.RuleSet node (weights copied into parameters)."""
        constants = kwargs.pop("constants", None)
        if constants is None and "constants" in node.metadata:
            constants = _decode_constants(node.metadata["constants"])
        return cls(node, constants=constants, name=name, **kwargs)

    def to_ir(self) -> ir.RuleSet:
        """The ir.RuleSet with the current weights (dtype as trained)."""
        weights = {n: self.weight(n).detach().cpu().numpy() for n in self.ruleset.weights}
        metadata = dict(self.ruleset.metadata)
        if self.constants:
            metadata["constants"] = _encode_constants(self.constants)
        return self.ruleset.replace(weights=weights, metadata=metadata)

    def weight(self, name: str) -> torch.Tensor:
        if name in self._fixed_names:
            return getattr(self, self._fixed_names[name])
        return self.weights[name]

    def extra_repr(self) -> str:
        return f"{len(self.ruleset.rules)} rules, queries {[q.predicate for q in self.ruleset.queries]}"

    def __str__(self):
        return "RuleLayer:\n" + format_ruleset(self.to_ir(), values="auto")

    # --- inputs --------------------------------------------------------------------------------
    def _dtype_device(self, ports):
        for t in list(self.weights.values()) + [self.weight(n) for n in self._fixed_names]:
            return t.dtype, t.device
        return self.dtype_marker.dtype, self.dtype_marker.device

    def _normalise(self, x, ports: dict, batch_size: int | None):
        """-> facts {pred: (sample, args) numpy}, values {pred: tensor aligned with facts}, B."""
        if x is not None:
            if isinstance(x, dict):
                ports = {**x, **ports}
            elif isinstance(x, (list, tuple)) and x and all(isinstance(s, dict) for s in x):
                ports = {**_stack_samples(x, self.input_names, self.preds), **ports}
                batch_size = len(x) if batch_size is None else batch_size
            else:
                if len(self.input_names) != 1:
                    raise GraphError(f"a positional input needs exactly one input predicate, "
                                     f"the rules have {self.input_names}", node=self.name,
                                     field="input", fix="pass a dict {predicate: value}")
                ports = {self.input_names[0]: x, **ports}
        for p in self.input_names:  # an input predicate without facts is an empty relation
            if p not in ports and self.preds[p].arity > 0:
                ports[p] = (None, np.zeros((0, self.preds[p].arity), np.int64),
                            np.zeros(0, np.int64))
        missing = [p for p in self.input_names if p not in ports]
        extra = [p for p in ports if p not in self.preds or not self.preds[p].input]
        if missing or extra:
            raise GraphError(f"inputs {sorted(ports)} do not match the input predicates "
                             f"{self.input_names}", node=self.name, field="input",
                             fix=f"give exactly {self.input_names}")
        dtype, device = self._dtype_device(ports)
        facts, values, sizes = {}, {}, []
        raw = {}
        for name in self.input_names:
            p = self.preds[name]
            v = ports[name]
            if torch.is_tensor(v) or isinstance(v, np.ndarray):
                if p.arity != 0:
                    raise GraphError(f"{name}/{p.arity} takes facts (values, args), got a tensor",
                                     node=self.name, field=name,
                                     fix="pass (values (m, dim), args (m, arity))")
                v = torch.as_tensor(v).to(dtype=dtype, device=device)
                if v.dim() == 1 and p.dim == 1:
                    v = v[:, None]
                if v.dim() != 2 or v.shape[1] != p.dim:
                    raise GraphError(f"{name}: expected (batch, {p.dim}), got {tuple(v.shape)}",
                                     node=self.name, field=name, fix=f"give {name} {p.dim} values")
                n = v.shape[0]
                sizes.append(n)
                raw[name] = (v, np.arange(n), np.zeros((n, 0), np.int64), True)
                continue
            if not isinstance(v, (tuple, list)) or len(v) not in (2, 3):
                raise GraphError(f"{name}: expected (values, args) or (values, args, sample), got "
                                 f"{type(v).__name__}", node=self.name, field=name,
                                 fix="pass facts as (values (m, dim) or None, args (m, arity))")
            vals, args = v[0], v[1]
            args = _ints(args).reshape(-1, p.arity) if p.arity else \
                np.zeros((_rows(vals, args), 0), np.int64)
            m = args.shape[0]
            sample = _ints(v[2]).reshape(-1) if len(v) == 3 else np.zeros(m, np.int64)
            if len(sample) != m:
                raise GraphError(f"{name}: {m} facts but {len(sample)} sample indices",
                                 node=self.name, field=name, fix="one sample index per fact")
            if len(v) == 3 and m:
                sizes.append(int(sample.max()) + 1)
            elif len(v) == 2:
                sizes.append(1)
            raw[name] = (vals, sample, args, False)
        B = batch_size if batch_size is not None else (max(sizes) if sizes else 1)
        for name, (vals, sample, args, prop) in raw.items():
            p = self.preds[name]
            m = len(sample)
            if vals is None:
                vals = torch.ones((m, p.dim), dtype=dtype, device=device)
            else:
                vals = torch.as_tensor(vals).to(dtype=dtype, device=device)
                if vals.dim() == 1 and p.dim == 1:
                    vals = vals[:, None]
                if vals.shape != (m, p.dim):
                    raise GraphError(f"{name}: values of shape {tuple(vals.shape)} for {m} facts "
                                     f"of dim {p.dim}", node=self.name, field=name,
                                     fix=f"give values ({m}, {p.dim})")
            if prop and m != B:
                raise GraphError(f"{name}: batch {m} differs from the batch size {B}",
                                 node=self.name, field=name, fix="give every input one batch")
            facts[name] = (sample, args)
            values[name] = vals
        return facts, values, B

    # --- evaluation ----------------------------------------------------------------------------
    def evaluate(self, x=None, *, batch_size: int | None = None, **ports):
        """All atoms' values: ({predicate: (n, dim) tensor}, Grounding)."""
        ds = as_dataset(x)
        if ds is not None:
            x, batch_size = self._dataset_inputs(ds)[0], len(ds)
        facts, values, B = self._normalise(x, ports, batch_size)
        grounding = self.cache(facts, B, structure_key(facts, B), self.progress)
        dtype, device = self._dtype_device(ports)
        gt = grounding.torch(device)
        V = dict(values)
        for comp in grounding.strata:
            levels = {p: grounding.levels[p] for p in comp}
            done: dict = {p: [] for p in comp}
            for p in comp:  # a rule may read a predicate of its component with no atoms yet
                V[p] = torch.zeros((0, self.preds[p].dim), dtype=dtype, device=device)
            for lev in range(max(len(b) - 1 for b in levels.values())):
                for p in comp:
                    if lev + 1 < len(levels[p]):
                        lo, hi = int(levels[p][lev]), int(levels[p][lev + 1])
                        done[p].append(self._atom_values(p, V, grounding, gt, lo, hi, dtype,
                                                         device))
                for p in comp:  # the next level reads every atom below it
                    V[p] = done[p][0] if len(done[p]) == 1 else torch.cat(done[p]) if done[p] \
                        else torch.zeros((0, self.preds[p].dim), dtype=dtype, device=device)
        return V, grounding

    def _dataset_inputs(self, ds):
        dtype, device = self._dtype_device({})
        return encode_dataset(ds, self.preds, self.input_names, self.constants, dtype, device)

    def _forward_dataset(self, ds) -> torch.Tensor:
        """One row per query of each sample, in order: (number of queries, dim)."""
        inputs, queries = self._dataset_inputs(ds)
        asked = [bool(s.queries) for s in ds.samples]
        if not any(asked):
            return self.forward(inputs, batch_size=len(ds))
        if not all(asked):
            raise GraphError("some samples have queries and some do not", node=self.name,
                             field="queries", fix="give every sample its queries, or none "
                                                  "(then the rule set's queries apply)")
        V, g = self.evaluate(inputs, batch_size=len(ds))
        dims = set()
        for s_i, name, args in queries:
            p = self.preds.get(name)
            if p is None or len(args) != p.arity:
                raise GraphError(f"query {name}{tuple(args)} of sample {s_i}: no such predicate "
                                 "with that arity", node=self.name, field="queries",
                                 fix=f"query one of {sorted(self.preds)}")
            dims.add(p.dim)
        if len(dims) > 1:
            raise GraphError(f"the queries' predicates have dimensions {sorted(dims)}",
                             node=self.name, field="queries",
                             fix="query predicates of one dimension in one call")
        out = [None] * len(queries)
        for name in dict.fromkeys(q[1] for q in queries):
            which = [k for k, q in enumerate(queries) if q[1] == name]
            rows = np.array([[queries[k][0], *queries[k][2]] for k in which], np.int64)
            idx = torch.as_tensor(find_rows(rows, g.atoms[name]), device=V[name].device)
            table = V[name]
            pad = torch.cat([table, table.new_zeros((1, table.shape[1]))])
            got = pad[torch.where(idx < 0, table.shape[0], idx)]
            for j, k in enumerate(which):
                out[k] = got[j]
        return torch.stack(out)

    def forward(self, x=None, *, batch_size: int | None = None, **ports) -> torch.Tensor:
        ds = as_dataset(x)
        if ds is not None:
            return self._forward_dataset(ds)
        V, g = self.evaluate(x, batch_size=batch_size, **ports)
        gt = g.torch(next(iter(V.values())).device)
        outs = []
        for q, idx in zip(self.ruleset.queries, gt["queries"]):
            table = V[q.predicate]
            pad = torch.cat([table, table.new_zeros((1, table.shape[1]))])
            outs.append(pad[torch.where(idx < 0, table.shape[0], idx)])
        return torch.cat(outs, -1)

    def atoms(self, x=None, predicate: str = "", *, batch_size: int | None = None, **ports):
        """Every derived atom of `predicate`: (values (n, dim), args (n, arity), sample (n,))."""
        V, g = self.evaluate(x, batch_size=batch_size, **ports)
        if predicate not in self.preds:
            raise GraphError(f"no predicate {predicate!r}", node=self.name, field="predicates",
                             fix=f"use one of {sorted(self.preds)}")
        table = g.atoms[predicate]
        return V[predicate], torch.as_tensor(table[:, 1:]), torch.as_tensor(table[:, 0])


def _ints(a) -> np.ndarray:
    if torch.is_tensor(a):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.size and a.dtype.kind not in "iub":
        raise GraphError(f"fact arguments must be integer constants, got dtype {a.dtype}",
                         field="args", fix="code constants as ints")
    return a.astype(np.int64)


def _rows(vals, args) -> int:
    """How many facts an arity-0 input gives: args' rows (m, 0), else the values' rows, else 1."""
    if args is not None and np.ndim(args) == 2:
        return int(np.shape(args)[0])
    if vals is not None:
        return int(vals.shape[0]) if hasattr(vals, "shape") else len(vals)
    return 1


def _stack_samples(samples: list, names: list, preds: dict) -> dict:
    out = {}
    for name in names:
        vals, args, smp = [], [], []
        has_values = None
        for s_i, s in enumerate(samples):
            if name not in s:
                continue
            v, a = s[name][0], s[name][1]
            if has_values is None:
                has_values = v is not None
            if (v is None) != (not has_values):
                raise GraphError(f"{name}: some samples give values and some do not", field=name,
                                 fix="give values for every sample or for none")
            arity = preds[name].arity
            a = _ints(a)
            m = _rows(v, a) if arity == 0 else a.size // arity
            args.append(a.reshape(m, arity))
            smp.append(np.full(m, s_i, np.int64))
            if v is not None:
                vals.append(torch.as_tensor(v))
        if not smp:
            out[name] = (None, np.zeros((0, preds[name].arity), np.int64), np.zeros(0, np.int64))
            continue
        out[name] = (torch.cat(vals) if has_values else None, np.concatenate(args),
                     np.concatenate(smp))
    return out


def _code_constants(rs: ir.RuleSet, given: dict) -> dict:
    """Integer codes for the rules' named constants: those given, and for the rest negative
    codes (data constants that are ints keep their value, so they never meet these)."""
    from ..ir.kinds.rules import is_variable
    codes = {str(k): int(v) for k, v in given.items()}
    terms = [t for r in rs.rules for t in r.head_terms] + \
        [t for r in rs.rules for lit in r.body for t in lit.terms] + \
        [t for f in rs.facts for t in f.terms] + [t for q in rs.queries for t in q.terms]
    nxt = min([0] + list(codes.values())) - 1
    for t in terms:
        if is_variable(t) or t in codes:
            continue
        try:
            int(t)
        except ValueError:
            codes[t] = nxt
            nxt -= 1
    return codes


def _encode_constants(constants: dict) -> str:
    return ",".join(f"{k}={int(v)}" for k, v in constants.items())


def _decode_constants(text: str) -> dict:
    return {k: int(v) for k, v in (item.split("=") for item in str(text).split(",") if item)}
