"""Relational rules in torch: `RuleLayer` evaluates an ir.RuleSet (a weighted Datalog program,
PyNeuraLogic >= 0.8 semantics) with gather / matmul / scatter-reduce, batched, its weights
nn.Parameters; `R`, `V`, `Template` author rule sets PyNeuraLogic-style.

Semantics (DESIGN.md). For a ground head h:
  rule neuron   z = T_rule(Comb_i(w_i * v(body_i)))      per grounding of rule r with head h
  aggregation   a_r(h) = Agg_r(z over those groundings)  avg by default; max / min pick the whole
                                                          z with the largest / smallest element sum
  atom value    v(h) = T_atom(sum_r W_r * a_r(h))        (rules without a grounding for h add 0)
Defaults: identity transformations, sum combination, avg aggregation, no bias; a fact given
without a value is 1.0; an underivable query is 0.0; a missing weight is 1. A 2-D weight (out, in)
is a matrix product, a scalar or 1-D weight multiplies elementwise. Hidden (*), negated and
built-in literals only decide which groundings exist. Combinations: sum, avg, max, min
(elementwise), elproduct, concat (dims of 1 broadcast). Transformations: every name in
ir.kinds.rules.TRANSFORMATIONS (leaky_relu slope 0.01, softmax over the vector, lukasiewicz =
clamp to [0, 1], inverse = 1/x, reverse = -x).

Inputs, one per input predicate (the RuleSet's input ports), in one of the forms:
  propositional   a tensor (batch, dim) for an arity-0 predicate: its value in each sample (the
                  `R.xy[tensor]` of PyNeuraLogic); `layer(x)` when it is the only input
  one sample      (values (m, dim) or None, args (m, arity)) integer constants per fact
  batched         (values (M, dim) or None, args (M, arity), sample (M,)): facts of many samples
                  at once (a batch of graphs); the batch size is `batch_size=` or max(sample)+1
  list            [ {pred: (values, args)}, ... ] one dict per sample
Pass them as `layer({"feat": ..., "edge": ...})` or `layer(feat=..., edge=...)`. The output is
(batch, sum of the queries' dims); `layer.atoms(inputs, predicate="h")` gives every derived atom
of a predicate. The relational structure (which facts, not their values) is grounded once and
cached by its hash, so a batch that repeats every epoch grounds once.

Evaluation: per rule, each visible literal's values are gathered along the grounding's index
arrays (a 2-D weight is applied before the gather when that is cheaper), combined, transformed
and scatter-reduced onto the head atoms (index_add_ for sum / avg, scatter_reduce for max / min).
A rule that is linear in one literal (identity transformation, sum / avg aggregation, one visible
literal or an elproduct whose other factors are 1-dimensional, as in a GCN layer) runs instead as
one CSR sparse product whose transpose for the backward pass is built once per grounding.

A GCN layer h = D^-1/2 (A + I) D^-1/2 X W^T is the rule
    h(X) :- $w={out, in} feat(Y), edge(X, Y). [combination=elproduct, aggregation=sum]
with one edge fact per nonzero of A + I whose value is 1 / sqrt(d_X d_Y): the normalisation is
data, the rule multiplies it into W feat(Y) and sums over the neighbours.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch
from torch import nn

from .. import ir
from ..ir import GraphError
from ..ir.kinds.rules import is_variable
from ..ir.rules_text import Program, WeightSpec, format_ruleset, parse_rules
from .grounding import Engine, GroundingCache, structure_key

SUPPORTED_COMBINATIONS = ("sum", "avg", "max", "min", "elproduct", "concat")
# the sparse products below use CSR tensors, which torch calls beta (its API, not our numbers)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state",
                        category=UserWarning)


def _transform(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "identity":
        return x
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "relu":
        return torch.relu(x)
    if name == "leaky_relu":
        return torch.nn.functional.leaky_relu(x, 0.01)
    if name == "exp":
        return torch.exp(x)
    if name == "softmax":
        return torch.softmax(x, -1)
    if name == "sqrt":
        return torch.sqrt(x)
    if name == "log":
        return torch.log(x)
    if name == "inverse":
        return 1.0 / x
    if name == "reverse":
        return -x
    if name in ("sign", "signum"):
        return torch.sign(x)
    if name == "lukasiewicz":
        return torch.clamp(x, 0.0, 1.0)
    raise GraphError(f"unknown transformation {name!r}", field="transformation",
                     fix=f"use one of {ir.kinds.rules.TRANSFORMATIONS}")


def _combine(name: str, parts: list) -> torch.Tensor:
    out = parts[0]
    if name == "concat":
        return torch.cat(parts, -1) if len(parts) > 1 else out
    for x in parts[1:]:
        if name in ("sum", "avg"):
            out = out + x
        elif name == "elproduct":
            out = out * x
        elif name == "max":
            out = torch.maximum(out, x)
        elif name == "min":
            out = torch.minimum(out, x)
    if name == "avg" and len(parts) > 1:
        out = out / len(parts)
    return out


def _aggregate(name: str, z: torch.Tensor, head: torch.Tensor, counts: torch.Tensor,
               n: int) -> torch.Tensor:
    d = z.shape[-1]
    if name == "count":
        return counts.to(z.dtype)[:, None].expand(n, d)
    if name in ("sum", "avg"):
        out = z.new_zeros((n, d)).index_add_(0, head, z)
        if name == "avg":
            out = out / counts.clamp(min=1).to(z.dtype)[:, None]
        return out
    # max / min: the whole z of the grounding with the largest / smallest element sum
    s = z.detach().sum(-1)
    if name == "min":
        s = -s
    best = s.new_full((n,), float("-inf")).scatter_reduce(0, head, s, "amax")
    is_best = s == best[head]
    g = torch.arange(len(s), device=z.device)
    pick = torch.full((n,), len(s), device=z.device, dtype=torch.long)
    pick = pick.scatter_reduce(0, head[is_best], g[is_best], "amin")
    zpad = torch.cat([z, z.new_zeros((1, d))])
    return zpad[pick]


def _csr(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int):
    """CSR index arrays of the entries (rows[g], cols[g]) and the permutation that orders the
    per-grounding values into them (duplicates stay separate entries: their sum is the product's)."""
    order = torch.argsort(rows * max(n_cols, 1) + cols)
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return crow, cols[order].contiguous(), order


class _GatherScatter(torch.autograd.Function):
    """out[h] = sum over groundings g with head h of vals[g] * table[idx[g]], as one CSR sparse
    matrix product (forward) and its transpose (backward, precomputed once per grounding)."""

    @staticmethod
    def forward(ctx, vals, table, s):
        mat = torch.sparse_csr_tensor(s["crow"], s["col"], vals.detach()[s["perm"]],
                                      (s["n_rows"], s["n_cols"]), check_invariants=False)
        ctx.s = s
        ctx.save_for_backward(vals, table)
        return torch.sparse.mm(mat, table.detach())

    @staticmethod
    def backward(ctx, grad):
        vals, table = ctx.saved_tensors
        s = ctx.s
        g_vals = g_table = None
        if ctx.needs_input_grad[1]:
            mat_t = torch.sparse_csr_tensor(s["crow_t"], s["col_t"], vals.detach()[s["perm_t"]],
                                            (s["n_cols"], s["n_rows"]), check_invariants=False)
            g_table = torch.sparse.mm(mat_t, grad.contiguous())
        if ctx.needs_input_grad[0]:
            g_vals = (grad[s["head"]] * table.detach()[s["idx"]]).sum(-1)
        return g_vals, g_table, None


def _spmm_structure(head, idx, n_rows, n_cols):
    crow, col, perm = _csr(head, idx, n_rows, n_cols)
    crow_t, col_t, perm_t = _csr(idx, head, n_cols, n_rows)
    return {"crow": crow, "col": col, "perm": perm, "crow_t": crow_t, "col_t": col_t,
            "perm_t": perm_t, "n_rows": n_rows, "n_cols": n_cols, "head": head, "idx": idx}


class RuleLayer(nn.Module):
    """A RuleSet as a torch layer (see the module docstring).

    `rules`: an ir.RuleSet, a Template, or text (`polyir.ir.rules_text`). `constants` maps the
    rules' non-integer constants to the integer codes used in the inputs' args. `dims`,
    `queries`, `seed`, `dtype` (of the weights written in the text) are used when `rules` is a
    Template or text.
    """

    def __init__(self, rules, *, constants: dict | None = None, dims: dict | None = None,
                 queries=None, seed: int = 0, dtype=np.float32, cache_size: int = 64,
                 name: str | None = None):
        super().__init__()
        if isinstance(rules, str):
            rules = parse_rules(rules, dims=dims, queries=queries, seed=seed, dtype=dtype)
        elif isinstance(rules, Template):
            rules = rules.build(dims=dims, queries=queries, seed=seed, dtype=dtype)
        if not isinstance(rules, ir.RuleSet):
            raise GraphError(f"RuleLayer takes an ir.RuleSet, a Template or rule text, got "
                             f"{type(rules).__name__}", node=name, field="rules",
                             fix="build the rules with polyir.nn.rules.Template or text")
        rules.validate(name)
        self.name = name
        self.ruleset = rules  # the structure; the live weights are the parameters below
        self.constants = dict(constants or {})
        self.engine = Engine(rules, self.constants, name)
        self.engine.check_nonrecursive()
        self.cache = GroundingCache(self.engine, cache_size)
        self.preds = {p.name: p for p in rules.predicates}
        self.input_names = [p.name for p in rules.predicates if p.input]
        for p in rules.predicates:
            if p.input and p.transformation != "identity":
                raise GraphError(f"input predicate {p.name!r} has transformation "
                                 f"{p.transformation!r}; inputs are taken as given", node=name,
                                 field="predicates", fix="transform the values before the layer")
        for i, r in enumerate(rules.rules):
            if r.combination not in SUPPORTED_COMBINATIONS:
                raise GraphError(f"rule {i} ({r.head}): combination {r.combination!r} is not "
                                 f"supported by RuleLayer", node=name, field="rules",
                                 fix=f"use one of {SUPPORTED_COMBINATIONS}")
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
        aggregation, one literal or an elproduct whose other factors are 1-dimensional): the
        position (among visible literals) of that literal, evaluated as one sparse product.
        Else None (gather, combine, transform, scatter)."""
        visible = [lit for lit in r.body
                   if not (lit.hidden or lit.negated or lit.predicate.startswith("@"))]
        if r.transformation != "identity" or r.aggregation not in ("sum", "avg"):
            return None
        if len(visible) == 1:
            return 0
        if r.combination != "elproduct":
            return None
        dims = []
        for lit in visible:
            d = self.preds[lit.predicate].dim
            if lit.weight is not None:
                w = self.ruleset.weights[lit.weight]
                d = w.shape[0] if w.ndim == 2 else (w.shape[0] if w.ndim == 1 else d)
            dims.append(d)
        wide = [k for k, d in enumerate(dims) if d > 1]
        if len(wide) > 1:
            return None
        return wide[0] if wide else 0

    def _literal_values(self, table, idx, wname):
        """table[idx] with the literal's weight applied."""
        if wname is None:
            return table[idx]
        w = self.weight(wname)
        if w.dim() == 2:
            return (table @ w.T)[idx] if idx.numel() > table.shape[0] else table[idx] @ w.T
        return table[idx] * w

    def _linear_rule(self, i, r, visible, V, gt, n):
        """The fast path (see `_fast_path`): a_r = S @ table (W applied before or after)."""
        head, body, counts = gt["rules"][i]
        carrier = self._fast[i]
        coef = None
        for k, j in enumerate(visible):
            if k == carrier:
                continue
            lit = r.body[j]
            part = self._literal_values(V[lit.predicate], body[k], lit.weight)[:, 0]
            coef = part if coef is None else coef * part
        if r.aggregation == "avg":
            scale = 1.0 / counts.clamp(min=1).to(V[r.body[visible[carrier]].predicate].dtype)[head]
            coef = scale if coef is None else coef * scale
        lit = r.body[visible[carrier]]
        table = V[lit.predicate]
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
            gt[key] = _spmm_structure(head, body[carrier], n, table.shape[0])
        a = _GatherScatter.apply(coef, table, gt[key])
        if post is not None:
            a = a @ post.T if post.dim() == 2 else a * post
        return a

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
        facts, values, B = self._normalise(x, ports, batch_size)
        grounding = self.cache(facts, B, structure_key(facts, B))
        gt = grounding.torch(next(iter(values.values())).device if values else "cpu")
        V = dict(values)
        rs = self.ruleset
        dtype = next(iter(values.values())).dtype if values else torch.get_default_dtype()
        for p in grounding.order:
            pred = self.preds[p]
            n = gt["n_atoms"][p]
            total = None
            for i in self.engine.by_head[p]:
                r = rs.rules[i]
                head, body, counts = gt["rules"][i]
                visible = grounding.rules[i].visible
                if self._fast[i] is not None and self.fast and head.numel() >= self.fast_min:
                    a = self._linear_rule(i, r, visible, V, gt, n)
                else:
                    parts = [self._literal_values(V[r.body[j].predicate], body[k], r.body[j].weight)
                             for k, j in enumerate(visible)]
                    z = _transform(r.transformation, _combine(r.combination, parts))
                    a = _aggregate(r.aggregation, z, head, counts, n)
                if r.weight is not None:
                    w = self.weight(r.weight)
                    a = a @ w.T if w.dim() == 2 else a * w
                total = a if total is None else total + a
            if total is None:
                total = torch.zeros((n, pred.dim), dtype=dtype)
            V[p] = _transform(pred.transformation, total)
        return V, grounding

    def forward(self, x=None, *, batch_size: int | None = None, **ports) -> torch.Tensor:
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


def _encode_constants(constants: dict) -> str:
    return ",".join(f"{k}={int(v)}" for k, v in constants.items())


def _decode_constants(text: str) -> dict:
    return {k: int(v) for k, v in (item.split("=") for item in str(text).split(",") if item)}


# --------------------------------------------------------------------------------------------
# authoring: R, V, C, Template (PyNeuraLogic-style)
# --------------------------------------------------------------------------------------------
class _Fn(str):
    """A function name tagged with its kind (Transformation.SIGMOID etc.)."""

    kind = ""


def _fns(kind: str, names):
    ns = type(kind.capitalize(), (), {})
    for n in names:
        f = _Fn(n)
        f.kind = kind
        setattr(ns, n.upper(), f)
    return ns


Transformation = _fns("transformation", ir.kinds.rules.TRANSFORMATIONS)
Combination = _fns("combination", ir.kinds.rules.COMBINATIONS)
Aggregation = _fns("aggregation", ir.kinds.rules.AGGREGATIONS)


class _Vars:
    def __getattr__(self, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return name[:1].upper() + name[1:]


class _Consts:
    def __getattr__(self, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return name[:1].lower() + name[1:]


V = _Vars()
C = _Consts()


def _weight_spec(item) -> WeightSpec:
    name = ""
    if isinstance(item, slice):
        name, item = str(item.start), item.stop
    elif isinstance(item, tuple) and item and isinstance(item[0], slice):
        name, item = str(item[0].start), (item[0].stop, *item[1:])
    if isinstance(item, str):
        return WeightSpec(item)
    if item is None and name:
        return WeightSpec(name)
    if isinstance(item, tuple) and len(item) >= 2 and all(isinstance(i, numbers.Integral)
                                                          for i in item):
        if len(item) > 2:
            raise GraphError(f"weight dimensions {item}: at most 2", field="weights",
                             fix="weights are scalars, vectors or matrices")
        return WeightSpec(name, dims=tuple(int(i) for i in item))
    if torch.is_tensor(item):
        item = item.detach().cpu().numpy()
    value = np.asarray(item, dtype=np.float64)
    if value.ndim > 2:
        raise GraphError(f"weight value of shape {value.shape}: at most 2-D", field="weights",
                         fix="weights are scalars, vectors or matrices")
    return WeightSpec(name, value=value)


class Atom:
    """`R.name(terms)` with optional weight, hidden / negated / built-in flags."""

    def __init__(self, name, terms=(), weight=None, hidden=False, negated=False, special=False):
        self.name, self.terms, self.weight = name, tuple(terms), weight
        self.hidden, self.negated, self.special = hidden, negated, special

    def _copy(self, **kw):
        d = dict(name=self.name, terms=self.terms, weight=self.weight, hidden=self.hidden,
                 negated=self.negated, special=self.special)
        d.update(kw)
        return Atom(**d)

    def __call__(self, *terms):
        if len(terms) == 1 and isinstance(terms[0], (list, tuple)):
            terms = tuple(terms[0])
        return self._copy(terms=tuple(str(t) for t in terms))

    def __getitem__(self, item):
        if self.hidden or self.special:
            raise GraphError(f"hidden / built-in literal {self.name} cannot carry a weight",
                             field="weights", fix="weight a visible literal")
        return self._copy(weight=_weight_spec(item))

    def fixed(self):
        if self.weight is None:
            raise GraphError(f"{self.name}: fixed() needs a weight", field="weights",
                             fix="write R.name[value].fixed()")
        w = WeightSpec(self.weight.name, self.weight.value, self.weight.dims, True)
        return self._copy(weight=w)

    def __invert__(self):
        if self.weight is not None:
            raise GraphError(f"weighted literal {self.name} cannot be negated", field="rules",
                             fix="negate the unweighted literal")
        return self._copy(negated=not self.negated)

    def __le__(self, body) -> "RuleSpec":
        if isinstance(body, Atom):
            body = [body]
        return RuleSpec(self, list(body))

    def __truediv__(self, arity: int) -> "PredicateSpec":
        return PredicateSpec(self.name, int(arity))

    def literal(self, prog: Program) -> ir.Literal:
        name = ("@" + self.name) if self.special else self.name
        weight = prog.add_weight(self.weight and WeightSpec(self.weight.name, self.weight.value,
                                                            self.weight.dims, self.weight.fixed))
        return ir.Literal(name, self.terms, weight=weight, negated=self.negated,
                          hidden=self.hidden)


def _meta(items) -> dict:
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for f in items:
        if not isinstance(f, _Fn):
            raise GraphError(f"metadata entry {f!r} is not a Transformation / Combination / "
                             "Aggregation", field="rules", fix="e.g. | [Transformation.SIGMOID]")
        out[f.kind] = str(f)
    return out


class RuleSpec:
    def __init__(self, head: Atom, body: list):
        self.head, self.body, self.meta = head, body, {}

    def __or__(self, items):
        self.meta.update(_meta(items))
        return self

    def add_to(self, prog: Program):
        meta = dict(self.meta)
        merge = not meta.pop("duplicit_grounding", False)
        learnable = meta.pop("learnable", True)
        body = [a.literal(prog) for a in self.body]
        for lit in body:  # declared in the order the text parser declares them
            if not lit.predicate.startswith("@"):
                prog.declare(lit.predicate, len(lit.terms))
        prog.declare(self.head.name, len(self.head.terms))
        head_w = prog.add_weight(self.head.weight and WeightSpec(
            self.head.weight.name, self.head.weight.value, self.head.weight.dims,
            self.head.weight.fixed))
        for k in meta:
            if k not in ("transformation", "combination", "aggregation"):
                raise GraphError(f"rule metadata {k!r} not understood", field="rules",
                                 fix="use transformation, combination, aggregation, learnable, "
                                     "duplicit_grounding")
        if not learnable:
            for n in [head_w] + [lit.weight for lit in body]:
                if n is not None:
                    prog.weights[n].fixed = True
        prog.rules.append(ir.Rule(self.head.name, self.head.terms, tuple(body), weight=head_w,
                                  merge_duplicates=merge, **meta))

    def __repr__(self):
        return f"RuleSpec({self.head.name} :- {[a.name for a in self.body]})"


class PredicateSpec:
    def __init__(self, name: str, arity: int):
        self.name, self.arity, self.meta = name, arity, {}

    def __or__(self, items):
        self.meta.update(_meta(items))
        return self

    def add_to(self, prog: Program):
        prog.declare(self.name, self.arity, **self.meta)


class _Hidden:
    def __init__(self, special=False):
        self.special_ = special

    @property
    def special(self):
        return _Hidden(True)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Atom(name, hidden=True, special=self.special_)

    def get(self, name):
        return Atom(name, hidden=True, special=self.special_)


class _Special:
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Atom(name, special=True)


class _Relations:
    """`R.name` -> an atom; `R.hidden.name`, `R.special.alldiff`, `R.get("name")`."""

    hidden = _Hidden()
    special = _Special()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name.startswith("_"):
            return Atom(name[1:], hidden=True)
        return Atom(name)

    def get(self, name: str) -> Atom:
        return Atom(name)


R = _Relations()


class Template:
    """A list of rules and predicate declarations, PyNeuraLogic-style::

        t = Template([R.xor[1, 8] <= R.xy])
        t += (R.h(V.X) <= (R.feat(V.Y)["w": 3, 2], R.hidden.edge(V.X, V.Y))) | [Aggregation.SUM]
        t += R.h / 1 | [Transformation.SIGMOID]
        rs = t.build()        # -> ir.RuleSet (dims inferred, {dims} weights Glorot-initialised)
    """

    def __init__(self, entries=()):
        self.entries = list(entries)

    def add_rule(self, entry):
        self.entries.append(entry)
        return self

    def add_rules(self, entries):
        self.entries.extend(entries)
        return self

    def __iadd__(self, entry):
        if isinstance(entry, (list, tuple)):
            return self.add_rules(entry)
        return self.add_rule(entry)

    def program(self) -> Program:
        prog = Program()
        for e in self.entries:
            if not isinstance(e, (RuleSpec, PredicateSpec)):
                raise GraphError(f"template entry {e!r} is not a rule or predicate declaration",
                                 field="rules", fix="facts are the layer's inputs")
            e.add_to(prog)
        return prog

    def build(self, *, dims: dict | None = None, inputs=None, queries=None, seed: int = 0,
              dtype=np.float32) -> ir.RuleSet:
        return self.program().to_ruleset(dims=dims, inputs=inputs, queries=queries, seed=seed,
                                          dtype=dtype)

    def __str__(self):
        return format_ruleset(self.build(), values="auto")


__all__ = ["RuleLayer", "Template", "R", "V", "C", "Transformation", "Combination",
           "Aggregation", "is_variable"]
