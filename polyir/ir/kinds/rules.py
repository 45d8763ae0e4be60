"""RuleSet: a weighted Datalog program (lifted relational neural network, PyNeuraLogic >= 0.8).

For a ground head h:
  rule neuron   z = T_rule(Comb_i(w_i * F_i(v(body_i))))  per grounding of rule r with head h
  aggregation   a_r(h) = Agg_r(z over those groundings)   (avg by default; max/min pick the whole
                                                           value with the largest/smallest sum)
  atom value    v(h) = T_atom(Comb_atom(W_r * a_r(h) over the rules r with head h,
                                        and the template facts' weights for h))
F_i is a literal's own function (identity unless written `sqrt(b(X))`); Comb_atom is the head
predicate's combination (sum by default). No bias; a fact without a value is 1.0; an underivable
query is 0.0; a missing weight is 1. A weight w applied to a value v: a 2-D w (out, in) is w @ v; a
scalar or 1-D w is w * v. Terms starting with an upper-case letter or '_' are variables, others are
constants; a head variable no positive body literal binds ranges over the sample's constants (its
active domain), as does a variable of a template fact. Every default is a stored field, so files
say exactly what they mean. The functions are PyNeuraLogic's (see docs/kinds/rules.md for each
definition and the few deliberate differences).
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from ..errors import GraphError
from ..fields import NamedArrays, Optional, Record, Records, Scalar, Strs, param
from ..types import port
from .base import Kind, kind

TRANSFORMATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "exp", "softmax", "sqrt",
                   "log", "inverse", "reverse", "sign", "signum", "lukasiewicz")
COMBINATIONS = ("sum", "avg", "max", "min", "product", "elproduct", "softmax", "crossum", "concat",
                "cosim")
AGGREGATIONS = ("avg", "sum", "max", "min", "count", "softmax")
#: filters on bound integer terms; `@next(X, Y)` also binds Y = X + 1 when only X is bound
BUILTINS = ("@alldiff", "@eq", "@neq", "@lt", "@leq", "@gt", "@geq", "@next")
#: combinations whose inputs broadcast to one dimension (a 1-dim input broadcasts)
BROADCASTING = ("sum", "avg", "max", "min", "product", "elproduct")
_NAME = re.compile(r"^@?[A-Za-z_][A-Za-z0-9_]*$")


def is_variable(term: str) -> bool:
    return term[:1].isupper() or term[:1] == "_"


@dataclasses.dataclass(frozen=True, eq=False)
class Predicate(Record):
    """A predicate: name/arity, the shape of its values, its atom transformation, and whether the
    node takes its facts as an input port (`input=True`) or derives it by rules."""

    name: str = param(Scalar(str))
    arity: int = param(Scalar(int), default=0)
    dim: int = param(Scalar(int), default=1)
    transformation: str = param(Scalar(str), default="identity")
    input: bool = param(Scalar(bool), default=False)
    combination: str = param(Scalar(str), default="sum")


@dataclasses.dataclass(frozen=True, eq=False)
class Literal(Record):
    """A body literal `weight function(predicate(terms))`; `hidden` literals only restrict
    groundings, `negated` ones hold when the atom is not derivable (negation as failure).
    `function` (a transformation) applies to the atom's value before the weight."""

    predicate: str = param(Scalar(str))
    terms: tuple = param(Strs(), default=())
    weight: str | None = param(Optional(Scalar(str)), default=None)
    negated: bool = param(Scalar(bool), default=False)
    hidden: bool = param(Scalar(bool), default=False)
    function: str = param(Scalar(str), default="identity")


@dataclasses.dataclass(frozen=True, eq=False)
class Fact(Record):
    """A fact written in the template, `<weight> predicate(terms).`: the atom holds in every
    sample with the weight as its value (trained unless fixed); variables range over the sample's
    constants. It adds to the atom's value like one more rule."""

    predicate: str = param(Scalar(str))
    weight: str = param(Scalar(str))
    terms: tuple = param(Strs(), default=())


@dataclasses.dataclass(frozen=True, eq=False)
class Rule(Record):
    """`weight head(head_terms) :- body.` with its own transformation, combination, aggregation.
    `merge_duplicates`: identical groundings count once (PyNeuraLogic's default). `agg_terms`:
    the head variables a softmax aggregation normalises over (the groundings of the atoms that
    agree on every other head term form one softmax)."""

    head: str = param(Scalar(str))
    head_terms: tuple = param(Strs(), default=())
    body: tuple = param(Records(Literal), default=())
    weight: str | None = param(Optional(Scalar(str)), default=None)
    transformation: str = param(Scalar(str), default="identity")
    combination: str = param(Scalar(str), default="sum")
    aggregation: str = param(Scalar(str), default="avg")
    merge_duplicates: bool = param(Scalar(bool), default=True)
    agg_terms: tuple = param(Strs(), default=())


@dataclasses.dataclass(frozen=True, eq=False)
class Query(Record):
    """An output: the value of `predicate(terms)` (0.0 when underivable)."""

    predicate: str = param(Scalar(str))
    terms: tuple = param(Strs(), default=())


@kind
@dataclasses.dataclass(frozen=True, eq=False)
class RuleSet(Kind):
    """A weighted Datalog program. Input ports: one per input predicate (its name); an arity-0
    predicate takes a real (dim,) vector, others a relation of facts. Output: the queries' values
    concatenated, shape (sum of their dims,). `weights` are shared by name; names in `fixed` are
    not trained."""

    predicates: tuple = param(Records(Predicate))
    rules: tuple = param(Records(Rule))
    weights: dict = param(NamedArrays(), default_factory=dict)
    queries: tuple = param(Records(Query), default=())
    fixed: tuple = param(Strs(), default=())
    facts: tuple = param(Records(Fact), default=())

    def predicate(self, name: str) -> Predicate:
        for p in self.predicates:
            if p.name == name:
                return p
        raise KeyError(name)

    def validate(self, name):
        preds = {}
        for p in self.predicates:
            if not _NAME.match(p.name) or p.name.startswith("@"):
                raise GraphError(f"bad predicate name {p.name!r}", node=name, field="predicates",
                                 fix="use identifiers")
            if p.name in preds:
                raise GraphError(f"predicate {p.name!r} declared twice", node=name,
                                 field="predicates", fix="declare each predicate once")
            if p.arity < 0 or p.dim < 1:
                raise GraphError(f"predicate {p.name!r} has arity {p.arity}, dim {p.dim}",
                                 node=name, field="predicates", fix="arity >= 0 and dim >= 1")
            if p.transformation not in TRANSFORMATIONS or p.combination not in BROADCASTING:
                raise GraphError(f"predicate {p.name!r}: transformation {p.transformation!r} / "
                                 f"combination {p.combination!r} unknown", node=name,
                                 field="predicates",
                                 fix=f"use one of {TRANSFORMATIONS} / {BROADCASTING}")
            preds[p.name] = p

        def literal_ok(pred, terms, where):
            if pred.startswith("@"):
                if pred not in BUILTINS:
                    raise GraphError(f"{where}: unknown built-in {pred!r}", node=name,
                                     field="rules", fix=f"use one of {BUILTINS}")
                if pred != "@alldiff" and len(terms) != 2:
                    raise GraphError(f"{where}: {pred} takes 2 terms, got {len(terms)}",
                                     node=name, field="rules", fix=f"write {pred}(A, B)")
                return None
            if pred not in preds:
                raise GraphError(f"{where}: predicate {pred!r} is not declared", node=name,
                                 field="rules", fix="add it to predicates")
            if len(terms) != preds[pred].arity:
                raise GraphError(f"{where}: {pred} takes {preds[pred].arity} terms, got "
                                 f"{len(terms)}", node=name, field="rules", fix="fix the arity")
            return preds[pred]

        def weight_ok(w, where):
            if w is not None and w not in self.weights:
                raise GraphError(f"{where}: weight {w!r} is not defined", node=name,
                                 field="weights", fix="add it to weights")

        for i, f in enumerate(self.facts):
            where = f"template fact {i} ({f.predicate})"
            p = literal_ok(f.predicate, f.terms, where)
            if p is None or p.input:
                raise GraphError(f"{where}: a template fact's predicate must not be an input",
                                 node=name, field="facts",
                                 fix="give facts of input predicates with the data")
            weight_ok(f.weight, where)
            w = self.weights[f.weight]
            if w.size not in (1, p.dim) or w.ndim > 1:
                raise GraphError(f"{where}: value of shape {w.shape} for {p.name} of dim {p.dim}",
                                 node=name, field="facts", fix=f"give a scalar or {p.dim} values")
        for i, r in enumerate(self.rules):
            where = f"rule {i} ({r.head})"
            head = literal_ok(r.head, r.head_terms, where)
            if head is None or head.input:
                raise GraphError(f"{where}: the head must be a derived (non-input) predicate",
                                 node=name, field="rules", fix="rules derive non-input predicates")
            if r.transformation not in TRANSFORMATIONS or r.combination not in COMBINATIONS \
                    or r.aggregation not in AGGREGATIONS:
                raise GraphError(f"{where}: transformation/combination/aggregation "
                                 f"{r.transformation}/{r.combination}/{r.aggregation} unknown",
                                 node=name, field="rules",
                                 fix=f"use {TRANSFORMATIONS} / {COMBINATIONS} / {AGGREGATIONS}")
            if not r.body:
                raise GraphError(f"{where}: empty body", node=name, field="rules",
                                 fix="write a body, or a template fact `head(terms).`")
            bound = set()
            for lit in r.body:
                literal_ok(lit.predicate, lit.terms, where)
                if lit.function not in TRANSFORMATIONS:
                    raise GraphError(f"{where}: unknown function {lit.function!r} on "
                                     f"{lit.predicate}", node=name, field="rules",
                                     fix=f"use one of {TRANSFORMATIONS}")
                if not lit.negated and not lit.predicate.startswith("@"):
                    bound |= {t for t in lit.terms if is_variable(t)}
            for lit in r.body:
                if lit.predicate == "@next" and is_variable(lit.terms[1]):
                    bound.add(lit.terms[1])
            unbound = set()
            for lit in r.body:
                if lit.negated or lit.predicate.startswith("@"):
                    unbound |= {t for t in lit.terms if is_variable(t)} - bound
            if unbound:
                raise GraphError(f"{where}: variable(s) {sorted(unbound)} of a negated or "
                                 "built-in literal are not bound by a positive literal",
                                 node=name, field="rules",
                                 fix="bind them with a positive (possibly hidden) literal")
            for w in [r.weight] + [lit.weight for lit in r.body]:
                weight_ok(w, where)
            if (r.aggregation == "softmax") != bool(r.agg_terms) or \
                    any(t not in r.head_terms or not is_variable(t) for t in r.agg_terms):
                raise GraphError(f"{where}: a softmax aggregation needs agg_terms, head variables "
                                 f"to normalise over (got {list(r.agg_terms)}); without them its "
                                 "value has one entry per grounding and no fixed dimension",
                                 node=name, field="rules",
                                 fix="write [aggregation=softmax(agg_terms=[J])] with J a head "
                                     "variable; agg_terms only with a softmax aggregation")
        for i, r in enumerate(self.rules):
            self.rule_dim(i, name)
        for f in self.fixed:
            if f not in self.weights:
                raise GraphError(f"fixed weight {f!r} is not defined", node=name, field="fixed",
                                 fix="list only names in weights")
        if not self.queries:
            raise GraphError("no queries", node=name, field="queries",
                             fix="name at least one output atom")
        for q in self.queries:
            p = literal_ok(q.predicate, q.terms, f"query {q.predicate}")
            if p is None:
                raise GraphError("a built-in cannot be queried", node=name, field="queries",
                                 fix="query a predicate")
            if any(is_variable(t) for t in q.terms):
                raise GraphError(f"query {q.predicate}{q.terms} has variables", node=name,
                                 field="queries", fix="queries are ground atoms")

    def visible(self, rule: Rule) -> list:
        """The body literals whose values enter the rule neuron (not hidden, negated, built-in)."""
        return [lit for lit in rule.body
                if not (lit.hidden or lit.negated or lit.predicate.startswith("@"))]

    def rule_dim(self, i: int, name: str | None = None) -> int:
        """The dimension of rule i's neuron z, checking that weights and predicate dims agree:
        a 2-D weight (out, in) takes an `in`-vector, a 1-D weight (k,) a k-vector (k > 1). How the
        literals' dimensions d_i combine follows the combination: sum / avg / max / min / product
        / elproduct broadcast them to one dimension (1 broadcasts); concat adds them; crossum
        multiplies them; softmax keeps one literal's dimension, or takes one scalar per literal;
        cosim takes two equal ones and gives 1. A count aggregation gives 1 whatever z is."""
        r = self.rules[i]
        dims = {p.name: p.dim for p in self.predicates}
        where = f"rule {i} ({r.head})"

        def fail(msg, fix, field="rules"):
            raise GraphError(f"{where}: {msg}", node=name, field=field, fix=fix)

        def apply(wname, d, what):
            if wname is None:
                return d
            w = self.weights[wname]
            if w.ndim == 2:
                if w.shape[1] != d:
                    fail(f"weight {wname!r} of shape {w.shape} is applied to {what} of dimension "
                         f"{d}", f"give {wname!r} shape ({w.shape[0]}, {d})", "weights")
                return w.shape[0]
            if w.ndim == 1 and w.shape[0] != 1:
                if d not in (1, w.shape[0]):
                    fail(f"weight {wname!r} of shape {w.shape} is applied to {what} of dimension "
                         f"{d}", f"give {wname!r} shape ({d},)", "weights")
                return w.shape[0]
            if w.ndim > 2:
                fail(f"weight {wname!r} has shape {w.shape}",
                     "weights are scalars, vectors or matrices", "weights")
            return d

        outs = [apply(lit.weight, dims[lit.predicate], lit.predicate) for lit in self.visible(r)]
        if not outs:
            fail("every body literal is hidden, negated or built-in",
                 "keep at least one visible literal")
        comb = r.combination
        if comb == "concat":
            rd = sum(outs)
        elif comb == "crossum":
            rd = int(np.prod(outs))
        elif comb == "cosim":
            if len(outs) != 2 or outs[0] != outs[1]:
                fail(f"cosim compares two literals of one dimension, got dimensions {outs}",
                     "give the rule two visible literals of equal dimension")
            rd = 1
        elif comb == "softmax" and len(outs) > 1:
            if any(o != 1 for o in outs):
                fail(f"a softmax over several literals takes one number from each, got "
                     f"dimensions {outs}", "weight each literal down to one number")
            rd = len(outs)
        else:
            big = {o for o in outs if o != 1}
            if len(big) > 1 or (comb == "product" and sum(o != 1 for o in outs) > 1):
                fail(f"body literals have dimensions {outs}" +
                     (" (a product multiplies at most one vector by scalars: PyNeuraLogic refuses "
                      "a column vector times a column vector)" if comb == "product" else ""),
                     "weight the literals to one dimension" if comb != "product" else
                     "use elproduct for elementwise products")
            rd = big.pop() if big else 1
        if r.aggregation == "softmax" and rd != 1:
            fail(f"a softmax aggregation normalises one number per grounding, the rule neuron "
                 f"has dimension {rd}", "weight the body down to one number")
        agg_dim = 1 if r.aggregation == "count" else rd
        out = apply(r.weight, agg_dim, "the rule neuron")
        if out != dims[r.head]:
            fail(f"the rule gives {r.head} dimension {out}, declared {dims[r.head]}",
                 f"declare {r.head} with dim={out} or fix the rule's weights", "predicates")
        return rd

    def in_ports(self):
        return {p.name: (port((p.dim,)) if p.arity == 0 else port((p.dim,), "relation", p.arity))
                for p in self.predicates if p.input}

    def out_port(self, inputs):
        return port((sum(self.predicate(q.predicate).dim for q in self.queries),))
