"""The rule program between a written rule set and an `ir.RuleSet`: rules whose weights are
still as written (`WeightSpec`: a value, or dimensions to initialise at random), predicate
declarations and queries, resolved by `Program.to_ruleset` into a RuleSet. The text parser
(polyir.ir.rules_parser) and the Python builder (polyir.nn.rule_builder) both build a Program.

Predicate dimensions that the rules leave open are inferred from the weights' shapes (a 2-D weight
(out, in) maps an `in`-vector to an `out`-vector; an unweighted lone body literal has the rule's
dimension); what remains open is 1 (a valueless fact is 1.0). Pass ``dims={name: N}`` to say it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .errors import GraphError
from .kinds.rules import BROADCASTING, Predicate, Query, RuleSet


@dataclasses.dataclass
class WeightSpec:
    """A weight as written: a value, or dimensions to initialise at random."""

    name: str
    value: np.ndarray | None = None
    dims: tuple | None = None
    fixed: bool = False

    @property
    def shape(self) -> tuple:
        return tuple(self.value.shape) if self.value is not None else tuple(self.dims)


@dataclasses.dataclass
class Program:
    """Rules (ir.Rule records naming their weights), the weights as written, predicate
    declarations (name -> dict of arity / transformation / dim / input) and queries."""

    rules: list = dataclasses.field(default_factory=list)
    weights: dict = dataclasses.field(default_factory=dict)
    predicates: dict = dataclasses.field(default_factory=dict)
    queries: list = dataclasses.field(default_factory=list)
    facts: list = dataclasses.field(default_factory=list)
    _anon: int = 0

    def new_weight_name(self) -> str:
        while True:
            name = f"w{self._anon}"
            self._anon += 1
            if name not in self.weights:
                return name

    def add_weight(self, spec: WeightSpec | None, where: str = "") -> str | None:
        """Register a weight (merging a named reference with its definition); returns its name."""
        if spec is None:
            return None
        if not spec.name:
            spec.name = self.new_weight_name()
        old = self.weights.get(spec.name)
        if old is None:
            self.weights[spec.name] = spec
        elif spec.value is not None or spec.dims is not None:
            if old.value is None and old.dims is None:
                old.value, old.dims = spec.value, spec.dims
            elif old.shape != spec.shape:
                raise GraphError(f"{where}weight ${spec.name} is defined twice with shapes "
                                 f"{old.shape} and {spec.shape}", field="weights",
                                 fix="define a shared weight once; later uses write just $name")
            old.fixed = old.fixed or spec.fixed
        else:
            old.fixed = old.fixed or spec.fixed
        return spec.name

    def declare(self, name: str, arity: int, where: str = "", **meta):
        d = self.predicates.setdefault(name, {"arity": arity})
        if d["arity"] != arity:
            raise GraphError(f"{where}predicate {name!r} is used with arity {d['arity']} and "
                             f"{arity}", field="predicates", fix="one predicate has one arity")
        for k, v in meta.items():
            if v is not None:
                d[k] = v

    # --- resolution --------------------------------------------------------------------------
    def to_ruleset(self, *, dims: dict | None = None, inputs=None, queries=None, seed: int = 0,
                   dtype=np.float32, metadata: dict | None = None) -> RuleSet:
        """Resolve into an ir.RuleSet: infer dimensions, initialise `{dims}` weights (Glorot
        uniform from `seed`), choose inputs (predicates no rule derives, unless `inputs` names
        them) and queries (given as ir.Query records, else the program's `?-`, else every derived
        arity-0 predicate no rule body uses)."""
        for r in self.rules:  # body first, then head: the order the parser declares in
            for lit in r.body:
                if not lit.predicate.startswith("@"):
                    self.declare(lit.predicate, len(lit.terms))
            self.declare(r.head, len(r.head_terms))
        for f in self.facts:
            self.declare(f.predicate, len(f.terms))
        for name, w in self.weights.items():
            if w.value is None and w.dims is None:
                raise GraphError(f"weight ${name} is used but never given a value or dimensions",
                                 field="weights", fix=f"write ${name}=<value or {{dims}}> once")
        heads = {r.head for r in self.rules} | {f.predicate for f in self.facts}
        input_names = set(inputs) if inputs is not None else \
            {n for n, d in self.predicates.items() if d.get("input") or n not in heads}
        pred_dims = infer_dims(self, dict(dims or {}))
        preds = []
        for name, d in self.predicates.items():
            preds.append(Predicate(name, arity=d["arity"], dim=pred_dims[name],
                                   transformation=d.get("transformation", "identity"),
                                   combination=d.get("combination", "sum"),
                                   input=name in input_names))
        rng = np.random.default_rng(seed)
        weights = {}
        for name, w in self.weights.items():
            if w.value is not None:
                value = w.value.detach().cpu().numpy() if hasattr(w.value, "detach") else w.value
                weights[name] = np.asarray(value, dtype=dtype)
            else:
                shape = tuple(int(x) for x in w.dims)
                fan = sum(shape[-2:]) if len(shape) >= 2 else 2 * (shape[0] if shape else 1)
                bound = np.sqrt(6.0 / max(fan, 1))
                weights[name] = rng.uniform(-bound, bound, size=shape).astype(dtype)
        fixed = tuple(n for n, w in self.weights.items() if w.fixed)
        if queries is None:
            queries = self.queries
        if not queries:
            used = {lit.predicate for r in self.rules for lit in r.body}
            queries = [Query(n) for n, d in self.predicates.items()
                       if n in heads and d["arity"] == 0 and n not in used]
        bad = [q for q in queries if not isinstance(q, Query)]
        if bad:
            raise GraphError(f"a query must be an ir.Query here, got {type(bad[0]).__name__}",
                             field="queries", fix="read text or R.h(1) atoms with "
                                                  "polyir.ir.rules_text.as_query first")
        return RuleSet(predicates=preds, rules=list(self.rules), weights=weights,
                       queries=queries, fixed=fixed, facts=list(self.facts),
                       metadata=metadata or {})


def weight_out_in(shape: tuple, dim_in: int | None):
    """(output dim, required input dim) of applying a weight of `shape` (None: unknown)."""
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 1 and shape[0] != 1:
        return shape[0], shape[0]
    return dim_in, None


def infer_dims(prog, given: dict) -> dict:
    """Predicate dimensions from weight shapes (see the module docstring); `given` fixes
    some of them."""
    d = {n: given.get(n, meta.get("dim")) for n, meta in prog.predicates.items()}
    shapes = {n: w.shape for n, w in prog.weights.items()}
    for f in getattr(prog, "facts", ()):
        size = int(np.prod(shapes[f.weight]))
        if size > 1 and d.get(f.predicate) is None:
            d[f.predicate] = size
    rdim: list = [None] * len(prog.rules)
    stage = 0
    for _ in range(4 * len(prog.rules) + 4):
        changed = False

        def setd(name, value):
            nonlocal changed
            if value is not None and d.get(name) is None:
                d[name] = int(value)
                changed = True

        for i, r in enumerate(prog.rules):
            visible = [lit for lit in r.body if not (lit.hidden or lit.negated
                                                     or lit.predicate.startswith("@"))]
            outs = []
            for lit in visible:
                if lit.weight is not None:
                    out, need = weight_out_in(shapes[lit.weight], d.get(lit.predicate))
                    if need is not None:
                        setd(lit.predicate, need)
                else:
                    out = d.get(lit.predicate)
                outs.append(out)
            complete = bool(outs) and all(o is not None for o in outs)
            if r.combination == "concat":
                comb = sum(outs) if complete else None
            elif r.combination == "crossum":
                comb = int(np.prod(outs)) if complete else None
            elif r.combination == "cosim":
                comb = 1
            elif r.combination == "softmax" and len(outs) > 1:
                comb = len(outs)
            else:
                known = [o for o in outs if o is not None]
                big = [o for o in known if o != 1]
                comb = big[0] if big else (1 if known and len(known) == len(outs) else None)
            if comb is not None and rdim[i] is None:
                rdim[i], changed = comb, True
            if r.aggregation == "count":
                if r.weight is not None:
                    setd(r.head, weight_out_in(shapes[r.weight], 1)[0])
                else:
                    setd(r.head, 1)
            elif r.weight is not None:
                out, need = weight_out_in(shapes[r.weight], rdim[i])
                if need is not None and rdim[i] is None:
                    rdim[i], changed = need, True
                setd(r.head, out)
            else:
                setd(r.head, rdim[i])
                if rdim[i] is None and d.get(r.head) is not None:
                    rdim[i], changed = d[r.head], True
            # an unweighted lone body literal has the rule's dimension; so has the one literal
            # still open among literals that are all scalars (a GCN's feat beside edge values)
            if rdim[i] is not None and r.combination in BROADCASTING + ("softmax",):
                open_ = [k for k, o in enumerate(outs) if o is None]
                if len(visible) == 1 and visible[0].weight is None:
                    setd(visible[0].predicate, rdim[i])
                elif len(open_) == 1 and visible[open_[0]].weight is None and \
                        all(o == 1 for o in outs if o is not None):
                    setd(visible[open_[0]].predicate, rdim[i])
        if not changed:
            if stage == 0:  # then: template facts with one number are scalars
                stage = 1
                for f in getattr(prog, "facts", ()):
                    if int(np.prod(shapes[f.weight])) == 1 and d.get(f.predicate) is None:
                        d[f.predicate] = 1
                continue
            break
    return {n: (v if v is not None else 1) for n, v in d.items()}


__all__ = ["Program", "WeightSpec", "infer_dims"]
