"""Authoring relational rules in Python, PyNeuraLogic-style: `R`, `V`, `C`, `F`, `Template`.

This module only writes rule sets (it builds an `ir.RuleSet` through
`polyir.ir.rules_program.Program`); evaluating them is `polyir.nn.rules.RuleLayer`'s concern, and
data (samples of facts, queries) is `polyir.nn.rule_data`'s.

    t = Template()
    t += R.xor[1, 8] <= R.xy                                      # {1, 8} xor :- xy.
    t += (R.h(V.X) <= (R.feat(V.Y)["w": 3, 2], R.hidden.edge(V.X, V.Y))) | [Aggregation.SUM]
    t += R.h / 1 | [F.sigmoid]                                    # h/1 [transformation=sigmoid]
    t += (R.g(V.X) <= F.sqrt(R.deg(V.X)))                         # a function on a literal
    t += R.loop(V.X, V.X)[1.0].fixed()                            # a template fact
    rs = t.build(queries=[R.h(0)])

Weights as PyNeuraLogic writes them: `R.a[0.5]` a value, `R.a[[1.0, 2.0]]` a vector value,
`R.a[2, 3]` a random (Glorot-uniform, seeded) 2x3 matrix, `R.a[2,]` a random 2-vector,
`R.a["w": 2, 3]` a named (shared) weight, `.fixed()` not trained.
"""
from __future__ import annotations

import numbers

import numpy as np
import torch

from .. import ir
from ..ir import GraphError
from ..ir.kinds.rules import AGGREGATIONS, COMBINATIONS, TRANSFORMATIONS
from ..ir.rules_parser import as_query
from ..ir.rules_printer import format_ruleset
from ..ir.rules_program import Program, WeightSpec


class _Fn(str):
    """A function name tagged with its kind (transformation, combination, aggregation). A
    transformation applied to an atom, `F.sqrt(R.deg(V.X))`, is that function on the literal."""

    kind = ""
    agg_terms: tuple = ()

    def __call__(self, atom=None, *, agg_terms=None):
        if self.kind == "aggregation" and str(self) == "softmax" and agg_terms is not None:
            f = _fn("aggregation", "softmax")
            f.agg_terms = tuple(str(t) for t in agg_terms)
            return f
        if self.kind != "transformation" or not isinstance(atom, Atom):
            raise GraphError(f"{self.kind} {str(self)!r} cannot be applied to {atom!r}",
                             field="rules", fix="apply transformations (F.sqrt, F.sigmoid, ...) "
                                                "to one atom: F.sqrt(R.deg(V.X))")
        return atom._copy(function=str(self))


def _fn(kind: str, name: str) -> _Fn:
    f = _Fn(name)
    f.kind = kind
    return f


def _fns(kind: str, names):
    ns = type(kind.capitalize(), (), {})
    for n in names:
        setattr(ns, n.upper(), _fn(kind, n))
    return ns


Transformation = _fns("transformation", TRANSFORMATIONS)
Transformation.LEAKYRELU = Transformation.LEAKY_RELU
Combination = _fns("combination", COMBINATIONS)
Combination.CROSSSUM, Combination.COSSIM = Combination.CROSSUM, Combination.COSIM
Aggregation = _fns("aggregation", AGGREGATIONS)


class F:
    """PyNeuraLogic's flat namespace of functions: transformations by name (`F.sigmoid`), the
    combinations (`F.avg`, `F.product`, `F.elproduct`, `F.softmax_comb`, `F.crossum`,
    `F.concat`, `F.cossim`) and the aggregations with an `_agg` suffix (`F.sum_agg`)."""


for _n in TRANSFORMATIONS:
    setattr(F, _n, _fn("transformation", _n))
for _n in COMBINATIONS:
    if _n != "softmax":
        setattr(F, _n, _fn("combination", _n))
F.softmax_comb = _fn("combination", "softmax")
F.crosssum, F.cossim = F.crossum, F.cosim
for _n in AGGREGATIONS:
    setattr(F, f"{_n}_agg", _fn("aggregation", _n))


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


def weight_spec(item) -> WeightSpec:
    """What `R.a[item]` declares: a value (number, nested list, array, tensor), random
    dimensions (a tuple of ints: `[2, 3]` or `[2,]`), or a name (`["w": ...]`, `["w"]`)."""
    name = ""
    if isinstance(item, slice):
        name, item = str(item.start), item.stop
    elif isinstance(item, tuple) and item and isinstance(item[0], slice):
        name, item = str(item[0].start), (item[0].stop, *item[1:])
    if isinstance(item, str):
        return WeightSpec(item)
    if item is None and name:
        return WeightSpec(name)
    if isinstance(item, tuple) and item and all(isinstance(i, numbers.Integral) and
                                                not isinstance(i, bool) for i in item):
        if len(item) > 2 or min(item) < 1:
            raise GraphError(f"weight dimensions {item}: one or two positive sizes",
                             field="weights", fix="write R.a[3,] (a vector) or R.a[2, 3]")
        return WeightSpec(name, dims=tuple(int(i) for i in item))
    if torch.is_tensor(item):  # kept as a tensor: a sample fact's value keeps its gradient
        if item.dim() > 2:
            raise GraphError(f"weight value of shape {tuple(item.shape)}: at most 2-D",
                             field="weights", fix="weights are scalars, vectors or matrices")
        return WeightSpec(name, value=item)
    value = np.asarray(item, dtype=np.float64)
    if value.ndim > 2:
        raise GraphError(f"weight value of shape {value.shape}: at most 2-D", field="weights",
                         fix="weights are scalars, vectors or matrices")
    return WeightSpec(name, value=value)


class Atom:
    """`R.name(terms)` with optional weight, function, hidden / negated / built-in flags."""

    def __init__(self, name, terms=(), weight=None, hidden=False, negated=False, special=False,
                 function="identity"):
        self.name, self.terms, self.weight = name, tuple(terms), weight
        self.hidden, self.negated, self.special = hidden, negated, special
        self.function = function

    def _copy(self, **kw):
        d = dict(name=self.name, terms=self.terms, weight=self.weight, hidden=self.hidden,
                 negated=self.negated, special=self.special, function=self.function)
        d.update(kw)
        return Atom(**d)

    def __call__(self, *terms):
        if len(terms) == 1 and isinstance(terms[0], (list, tuple)):
            terms = tuple(terms[0])
        return self._copy(terms=tuple(t if isinstance(t, (int, np.integer)) else str(t)
                                      for t in terms))

    def __getitem__(self, item):
        if self.hidden or self.special:
            raise GraphError(f"hidden / built-in literal {self.name} cannot carry a weight",
                             field="weights", fix="weight a visible literal")
        return self._copy(weight=weight_spec(item))

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

    def text_terms(self) -> tuple:
        return tuple(str(t) for t in self.terms)

    def __str__(self):
        return self.name + (f"({', '.join(self.text_terms())})" if self.terms else "")

    def __repr__(self):
        return f"R.{self}"

    def _weight_name(self, prog: Program) -> str | None:
        w = self.weight
        return prog.add_weight(w and WeightSpec(w.name, w.value, w.dims, w.fixed))

    def literal(self, prog: Program) -> ir.Literal:
        name = ("@" + self.name) if self.special else self.name
        return ir.Literal(name, self.text_terms(), weight=self._weight_name(prog),
                          negated=self.negated, hidden=self.hidden, function=self.function)

    def add_to(self, prog: Program):
        """A template fact: the atom holds in every sample, its weight its value (1.0, fixed,
        when it has none)."""
        if self.hidden or self.negated or self.special or self.function != "identity":
            raise GraphError(f"template fact {self}: a fact is a plain atom", field="facts",
                             fix="write R.name(terms)[value]")
        if self.weight is None:
            name = prog.add_weight(WeightSpec("", value=np.asarray(1.0), fixed=True))
        else:
            name = self._weight_name(prog)
        prog.declare(self.name, len(self.terms))
        prog.facts.append(ir.Fact(self.name, name, self.text_terms()))


def _meta(items) -> dict:
    if isinstance(items, dict):
        return {k: str(v) if isinstance(v, _Fn) else v for k, v in items.items()}
    if isinstance(items, _Fn):
        items = [items]
    out = {}
    for f in items:
        if not isinstance(f, _Fn):
            raise GraphError(f"metadata entry {f!r} is not a Transformation / Combination / "
                             "Aggregation", field="rules", fix="e.g. | [Transformation.SIGMOID]")
        out[f.kind] = str(f)
        if f.agg_terms:
            out["agg_terms"] = f.agg_terms
    return out


class _Annotated:
    """`entry | [functions]` or `entry | {key: value}` adds metadata to a rule or predicate."""

    meta: dict

    def __or__(self, items):
        self.meta.update(_meta(items))
        return self


class RuleSpec(_Annotated):
    def __init__(self, head: Atom, body: list):
        self.head, self.body, self.meta = head, body, {}

    def add_to(self, prog: Program):
        meta = dict(self.meta)
        merge = True
        for key in ("duplicit_grounding", "duplicate_grounding"):
            if key in meta:
                merge = not meta.pop(key)
        learnable = meta.pop("learnable", True)
        body = [a.literal(prog) for a in self.body]
        for lit in body:  # declared in the order the text parser declares them
            if not lit.predicate.startswith("@"):
                prog.declare(lit.predicate, len(lit.terms))
        prog.declare(self.head.name, len(self.head.terms))
        head_w = self.head._weight_name(prog)
        for k in meta:
            if k not in ("transformation", "combination", "aggregation", "agg_terms"):
                raise GraphError(f"rule metadata {k!r} not understood", field="rules",
                                 fix="use transformation, combination, aggregation, learnable, "
                                     "duplicit_grounding")
        if not learnable:
            for n in [head_w] + [lit.weight for lit in body]:
                if n is not None:
                    prog.weights[n].fixed = True
        prog.rules.append(ir.Rule(self.head.name, self.head.text_terms(), tuple(body),
                                  weight=head_w, merge_duplicates=merge, **meta))

    def __repr__(self):
        return f"RuleSpec({self.head} :- {', '.join(str(a) for a in self.body)})"


class PredicateSpec(_Annotated):
    def __init__(self, name: str, arity: int):
        self.name, self.arity, self.meta = name, arity, {}

    def add_to(self, prog: Program):
        bad = set(self.meta) - {"transformation", "combination"}
        if bad:
            raise GraphError(f"predicate {self.name}/{self.arity}: metadata {sorted(bad)} not "
                             "understood", field="predicates",
                             fix="a predicate takes a transformation and a combination")
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
    """A list of rules, template facts and predicate declarations, PyNeuraLogic-style::

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
            if not isinstance(e, (RuleSpec, PredicateSpec, Atom)):
                raise GraphError(f"template entry {e!r} is not a rule, fact or predicate "
                                 "declaration", field="rules",
                                 fix="add rules (R.h <= R.b), facts (R.e(1, 2)[0.5]) or R.h / 1")
            e.add_to(prog)
        return prog

    def build(self, *, dims: dict | None = None, inputs=None, queries=None, seed: int = 0,
              dtype=np.float32) -> ir.RuleSet:
        if queries is not None:
            queries = [as_query(q) for q in queries]
        return self.program().to_ruleset(dims=dims, inputs=inputs, queries=queries, seed=seed,
                                          dtype=dtype)

    def __str__(self):
        return format_ruleset(self.build(), values="auto")


__all__ = ["Template", "R", "V", "C", "F", "Atom", "Transformation", "Combination",
           "Aggregation", "weight_spec"]
