"""Printing a RuleSet in its text form (PyNeuraLogic's printed template syntax, read back by
polyir.ir.rules_parser): weights with their values or as {dims}, rules with the metadata that
differs from the defaults, and the predicate declarations the rules alone would not say.
`format_ruleset(rs)` parses back to an equal RuleSet."""
from __future__ import annotations

import numpy as np

from .kinds.rules import Rule, RuleSet
from .rules_program import Program, WeightSpec, infer_dims

#: how the printer spells the IR's names (PyNeuraLogic's spelling where it differs)
PRINTED = {"leaky_relu": "leakyrelu", "crossum": "crosssum", "cosim": "cossim"}
RULE_DEFAULTS = {"transformation": "identity", "combination": "sum", "aggregation": "avg"}


def _num(x, dtype) -> str:
    if dtype == np.float64:
        return repr(float(x))
    return np.format_float_positional(np.asarray(x, dtype=dtype)[()], unique=True, trim="0")


def format_weight(value: np.ndarray, values: bool | str = True) -> str:
    """A weight as text: its values, or `{dims}` when `values` is False (or 'auto' and large)."""
    v = np.asarray(value)
    show = values is True or (values == "auto" and v.size <= 8)
    if not show and v.ndim > 0:
        return "{" + ", ".join(str(s) for s in v.shape) + "}"
    dtype = v.dtype if v.dtype in (np.float16, np.float32, np.float64) else np.float32
    if v.ndim == 0:
        return _num(v, dtype)
    if v.ndim == 1:
        return "[" + ", ".join(_num(x, dtype) for x in v) + "]"
    return "[" + ", ".join("[" + ", ".join(_num(x, dtype) for x in row) + "]" for row in v) + "]"


def _weight_text(rs: RuleSet, name: str | None, values, seen: set) -> str:
    if name is None:
        return ""
    if name in seen:
        text = f"${name}"
    else:
        seen.add(name)
        text = f"${name}={format_weight(rs.weights[name], values)}"
    if name in rs.fixed:
        text = f"<{text}>"
    return text + " "


def _atom(name, terms) -> str:
    return name + (f"({', '.join(terms)})" if terms else "")


def format_rule(rs: RuleSet, r: Rule, values=True, seen: set | None = None) -> str:
    seen = set() if seen is None else seen
    head = _weight_text(rs, r.weight, values, seen) + _atom(r.head, r.head_terms)
    body = []
    for lit in r.body:
        pred = lit.predicate
        text = ("!" if lit.negated else "") + _weight_text(rs, lit.weight, values, seen)
        atom = _atom(pred, lit.terms)
        if lit.function != "identity":
            atom = f"{PRINTED.get(lit.function, lit.function)}({atom})"
        text += ("*" if lit.hidden else "") + atom
        body.append(text)
    meta = [f"{k}={PRINTED.get(getattr(r, k), getattr(r, k))}"
            for k, default in RULE_DEFAULTS.items() if getattr(r, k) != default]
    if r.agg_terms:
        meta = [m + f"(agg_terms=[{', '.join(r.agg_terms)}])" if m.startswith("aggregation=")
                else m for m in meta]
    if not r.merge_duplicates:
        meta.append("duplicit_grounding=true")  # PyNeuraLogic's spelling
    return f"{head} :- {', '.join(body)}." + (f" [{', '.join(meta)}]" if meta else "")


def format_ruleset(rs: RuleSet, values: bool | str = True) -> str:
    """RuleSet -> text. With values=True the text parses back to an equal RuleSet (weights
    exact); values='auto' prints weights of more than 8 numbers as {dims}; False always does."""
    seen: set = set()
    lines = [_weight_text(rs, f.weight, values, seen) + _atom(f.predicate, f.terms) + "."
             for f in rs.facts]
    lines += [format_rule(rs, r, values, seen) for r in rs.rules]
    # declarations: what the rules alone would not say
    prog = Program(rules=list(rs.rules), facts=list(rs.facts),
                   weights={n: WeightSpec(n, value=v) for n, v in rs.weights.items()})
    for p in rs.predicates:
        prog.declare(p.name, p.arity)
    actual = {p.name: p.dim for p in rs.predicates}
    stated: dict = {}
    while True:  # state the dims inference would get wrong, given those already stated
        inferred = infer_dims(prog, dict(stated))
        wrong = {n for n in actual if inferred.get(n) != actual[n]} - set(stated)
        if not wrong:
            break
        stated.update({n: actual[n] for n in wrong})
    heads = {r.head for r in rs.rules} | {f.predicate for f in rs.facts}
    natural = []  # the order parsing the facts and rules alone declares predicates in
    for name in [f.predicate for f in rs.facts]:
        if name not in natural:
            natural.append(name)
    for r in rs.rules:
        for name in [lit.predicate for lit in r.body] + [r.head]:
            if not name.startswith("@") and name not in natural:
                natural.append(name)
    up_front = natural != [p.name for p in rs.predicates]
    decls = []
    for p in rs.predicates:
        meta = []
        if p.transformation != "identity":
            meta.append(f"transformation={PRINTED.get(p.transformation, p.transformation)}")
        if p.combination != "sum":
            meta.append(f"combination={p.combination}")
        if p.name in stated:
            meta.append(f"dim={p.dim}")
        if p.input == (p.name in heads):
            meta.append(f"input={'true' if p.input else 'false'}")
        if meta or up_front:
            decls.append(f"{p.name}/{p.arity}" + (f" [{', '.join(meta)}]" if meta else ""))
    lines = decls + lines if up_front else lines + decls
    if rs.queries:
        lines.append("?- " + ", ".join(_atom(q.predicate, q.terms) for q in rs.queries) + ".")
    return "\n".join(lines) + "\n"


def describe(node) -> str | None:
    """Text for `polyir info`: a RuleSet's rules (weights over 8 numbers shown as {dims}); None
    for other kinds."""
    if isinstance(node, RuleSet):
        return format_ruleset(node, values="auto")
    return None


__all__ = ["format_ruleset", "format_rule", "format_weight", "describe"]
