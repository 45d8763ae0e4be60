"""Reading the text form of a RuleSet: a tokenizer and a recursive-descent parser for
PyNeuraLogic's printed template syntax, into a `Program` (polyir.ir.rules_program) and from
there an `ir.RuleSet`. What PyNeuraLogic prints for a template parses here, so a printed template
can be pasted::

    {1, 8} xor :- xy.
    h(X) :- {3, 2} feat(Y), *edge(X, Y). [transformation=sigmoid, aggregation=avg]
    xor/0 [transformation=identity]

Statements
  rule          ``[weight] head[(terms)] :- literal, literal, ... . [key=value, ...]``
  fact          ``[weight] head[(terms)].`` (a template fact: holds in every sample, the weight its
                value, 1.0 fixed when none is written; variables range over the sample's constants)
  predicate     ``name/arity [key=value, ...]`` (transformation, combination of the rules with
                this head; polyir adds ``dim=N`` and ``input=true``, which PyNeuraLogic has no need
                for: its facts come with the data)
  query         ``?- atom, atom.`` (polyir's; the RuleSet's outputs, in order)
  comments      ``% ...`` or ``// ...`` to the end of the line
A ``[`` after a statement opens metadata only as ``[key=``; otherwise it is the next rule's weight.

Literals: ``[weight] [*][@]name[(terms)]`` or ``[weight] function(name[(terms)])`` (a
transformation applied to the atom's value, then the weight); ``*`` hidden (matching only), ``@``
a built-in (``@alldiff(X, Y, ...)``, ``@eq``, ``@neq``, ``@lt``, ``@leq``, ``@gt``, ``@geq`` on
integer constants, ``@next(X, Y)``: Y = X + 1, binding Y), a leading ``!`` or ``~`` negation as
failure. Terms: variables start upper-case or with ``_`` (each bare ``_`` is a fresh variable),
constants are lower-case names or integers.

Weights: a number ``0.5``; a value ``[1.0, 2.0]`` or ``[[...], [...]]``; dimensions ``{3, 2}``
(initialised at random: Glorot-uniform, from `seed`); named ``$w={3, 2}`` (shared by every literal
that names ``$w``; a later ``$w`` may omit the value); fixed (not trained) ``<...>``.

Rule metadata keys: transformation, combination, aggregation (``softmax(agg_terms=[J])`` names
the head variables a softmax aggregation normalises over), learnable (false fixes the rule's
weights), duplicit_grounding or duplicate_grounding (true keeps identical groundings apart:
`Rule.merge_duplicates`).
Function names accept PyNeuraLogic's spellings (leakyrelu, crosssum, cossim).

Predicate dimensions that the text leaves open are inferred from the weights' shapes
(`polyir.ir.rules_program.infer_dims`); pass ``dims={name: N}`` to say them.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from .errors import FormatError, GraphError
from .kinds.rules import (AGGREGATIONS, BROADCASTING, BUILTINS, COMBINATIONS, TRANSFORMATIONS, Fact,
                          Literal, Query, Rule, RuleSet, is_variable)
from .rules_program import Program, WeightSpec

ALIASES = {"leakyrelu": "leaky_relu", "crosssum": "crossum", "cossim": "cosim",
           "average": "avg", "maximum": "max", "minimum": "min", "logarithm": "log",
           "exponentiation": "exp"}
#: PyNeuraLogic functions polyir does not offer, and why (the parser says so)
UNSUPPORTED = {
    ("aggregation", "concat"): "a concat aggregation gives a vector whose length is the number of "
                               "groundings, so the atom has no fixed dimension",
    ("transformation", "sparsemax"): "not implemented in polyir",
    ("transformation", "transp"): "polyir atoms are vectors (nothing to transpose)",
    ("transformation", "norm"): "not implemented in polyir",
    ("combination", "sparsemax"): "not implemented in polyir",
}
#: the rule metadata keys PyNeuraLogic writes for keeping identical groundings apart
DUPLICATE_KEYS = ("duplicit_grounding", "duplicate_grounding")


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r]+) | (?P<nl>\n) | (?P<comment>%[^\n]*|//[^\n]*)
  | (?P<number>[-+]?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\.\d+(?:[eE][-+]?\d+)?|\d+)(?![A-Za-z_]))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>:-|\?-|[()\[\]{},.<>=$*@!~/])
""", re.VERBOSE)


@dataclasses.dataclass
class Tok:
    kind: str
    text: str
    line: int
    col: int


def tokenize(text: str, path: str | None = None) -> list[Tok]:
    toks, pos, line, start = [], 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FormatError(f"unexpected character {text[pos]!r}", path=path,
                              where=f"line {line}, column {pos - start + 1}")
        kind = m.lastgroup
        if kind == "nl":
            line, start = line + 1, m.end()
        elif kind not in ("ws", "comment"):
            # '8.' at a statement's end is the number 8 and the full stop
            tx = m.group()
            if kind == "number" and tx.endswith(".") and "e" not in tx.lower():
                toks.append(Tok("number", tx[:-1], line, pos - start + 1))
                toks.append(Tok("op", ".", line, m.end() - start))
            else:
                toks.append(Tok(kind, tx, line, pos - start + 1))
        pos = m.end()
    toks.append(Tok("eof", "", line, pos - start + 1))
    return toks


class _Parser:
    def __init__(self, text: str, path: str | None):
        self.toks = tokenize(text, path)
        self.i = 0
        self.path = path
        self.prog = Program()
        self.fresh = 0

    # --- helpers -----------------------------------------------------------------------------
    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def error(self, msg: str, tok: Tok | None = None) -> FormatError:
        tok = tok or self.tok
        return FormatError(msg, path=self.path, where=f"line {tok.line}, column {tok.col}")

    def at(self, text: str) -> bool:
        return self.tok.kind == "op" and self.tok.text == text

    def at_metadata(self) -> bool:
        """`[key=...` (metadata) rather than `[1.0, ...] head :- ...` (the next rule's weight)."""
        return self.at("[") and self.peek().kind == "name" and self.peek(2).text == "="

    def expect(self, text: str, what: str = "") -> Tok:
        if not self.at(text):
            got = self.tok.text or "end of text"
            raise self.error(f"expected {text!r}{' ' + what if what else ''}, got {got!r}")
        t = self.tok
        self.i += 1
        return t

    def name(self, what: str) -> Tok:
        if self.tok.kind != "name":
            raise self.error(f"expected {what}, got {self.tok.text or 'end of text'!r}")
        t = self.tok
        self.i += 1
        return t

    def where(self, tok: Tok) -> str:
        return f"line {tok.line}, column {tok.col}: "

    # --- grammar -----------------------------------------------------------------------------
    def parse(self) -> Program:
        while self.tok.kind != "eof":
            if self.at("."):
                self.i += 1
                continue
            if self.at("?-"):
                self.query()
            elif self.tok.kind == "name" and self.peek().kind == "op" and self.peek().text == "/":
                self.predicate_meta()
            elif self.at("*") and self.peek().kind == "name" and self.peek(2).text == "/":
                self.i += 1
                self.predicate_meta()
            else:
                self.rule()
        return self.prog

    def wrap(self, fn, tok):
        try:
            return fn()
        except GraphError as exc:
            raise self.error(exc.reason, tok) from None

    def query(self):
        self.expect("?-")
        while True:
            tok = self.tok
            name, terms = self.atom_terms()
            if any(is_variable(t) for t in terms):
                raise self.error("queries are ground atoms (no variables)", tok)
            self.prog.queries.append(Query(name, tuple(terms)))
            if self.at(","):
                self.i += 1
                continue
            break
        self.expect(".", "after the query")

    def predicate_meta(self):
        tok = self.name("a predicate name")
        self.expect("/")
        if self.tok.kind != "number" or not self.tok.text.isdigit():
            raise self.error("expected the arity (an integer) after '/'")
        arity = int(self.tok.text)
        self.i += 1
        meta = self.metadata() if self.at_metadata() else {}
        allowed = {"transformation", "combination", "dim", "input"}
        bad = set(meta) - allowed
        if bad:
            raise self.error(f"predicate metadata {sorted(bad)} not understood (a predicate "
                             f"takes {sorted(allowed)})", tok)
        kw = {}
        if "transformation" in meta:
            kw["transformation"] = self.function(meta["transformation"], TRANSFORMATIONS, tok,
                                                 "transformation")
        if "combination" in meta:
            kw["combination"] = self.function(meta["combination"], BROADCASTING, tok,
                                              "combination")
        if "dim" in meta:
            kw["dim"] = self.intval(meta["dim"], tok)
        if "input" in meta:
            kw["input"] = self.boolval(meta["input"], tok)
        self.wrap(lambda: self.prog.declare(tok.text, arity, **kw), tok)
        if self.at("."):
            self.i += 1

    def rule(self):
        start = self.tok
        weight = self.weight()
        if self.at("*") or self.at("@") or self.at("!") or self.at("~"):
            raise self.error("a rule head cannot be hidden, built-in or negated")
        htok = self.tok
        head, head_terms = self.atom_terms()
        if self.at("."):
            self.i += 1
            self.template_fact(weight, head, head_terms, htok)
            return
        self.expect(":-", "after the rule head")
        body = [self.literal()]
        while self.at(","):
            self.i += 1
            body.append(self.literal())
        self.expect(".", "at the end of the rule")
        meta = self.metadata() if self.at_metadata() else {}
        kw = {}
        for key in ("transformation", "combination", "aggregation"):
            if key in meta:
                table = {"transformation": TRANSFORMATIONS, "combination": COMBINATIONS,
                         "aggregation": AGGREGATIONS}[key]
                kw[key] = self.function(meta.pop(key), table, start, key)
        if "agg_terms" in meta:
            kw["agg_terms"] = meta.pop("agg_terms")[0]
        for key in DUPLICATE_KEYS:
            if key in meta:
                kw["merge_duplicates"] = not self.boolval(meta.pop(key), start)
        learnable = self.boolval(meta.pop("learnable"), start) if "learnable" in meta else True
        if meta:
            raise self.error(f"rule metadata {sorted(meta)} not understood", start)
        wname = self.wrap(lambda: self.prog.add_weight(weight), start)
        lits = []
        for lit, spec, tok in body:
            name = self.wrap(lambda: self.prog.add_weight(spec), tok)
            lits.append(dataclasses.replace(lit, weight=name) if name else lit)
            if not lit.predicate.startswith("@"):
                self.wrap(lambda: self.prog.declare(lit.predicate, len(lit.terms)), tok)
        self.wrap(lambda: self.prog.declare(head, len(head_terms)), htok)
        if not learnable:
            for n in [wname] + [lit.weight for lit in lits]:
                if n is not None:
                    self.prog.weights[n].fixed = True
        self.prog.rules.append(Rule(head, tuple(head_terms), tuple(lits), weight=wname, **kw))

    def template_fact(self, weight, head, terms, tok):
        """`[weight] head(terms).`: the atom holds in every sample with that value (1.0, fixed,
        when no weight is written)."""
        if weight is None:
            weight = WeightSpec("", value=np.asarray(1.0), fixed=True)
        name = self.wrap(lambda: self.prog.add_weight(weight), tok)
        self.wrap(lambda: self.prog.declare(head, len(terms)), tok)
        self.prog.facts.append(Fact(head, name, tuple(terms)))

    def literal(self):
        tok = self.tok
        negated = False
        if self.at("!") or self.at("~"):
            negated = True
            self.i += 1
        elif self.tok.kind == "name" and self.tok.text == "not" and self.peek().kind == "name":
            negated = True
            self.i += 1
        weight = self.weight()
        if negated and weight is not None:
            raise self.error("a negated literal cannot carry a weight", tok)
        hidden = special = False
        if self.at("*"):
            hidden = True
            self.i += 1
        if self.at("@"):
            special = True
            self.i += 1
        if (hidden or special) and weight is not None:
            raise self.error("a hidden or built-in literal cannot carry a weight", tok)
        ptok = self.tok
        function = "identity"
        if not special and self.function_call():
            function = self.function((self.tok.text, self.tok), TRANSFORMATIONS, ptok,
                                     "transformation")
            self.i += 2
            if self.at("*") or self.at("@") or self.at("!") or self.at("~"):
                raise self.error("write the function inside the marks: *sqrt(b(X)) is not "
                                 "supported, sqrt(b(X)) is")
            ptok = self.tok
            name, terms = self.atom_terms()
            self.expect(")", f"closing {function}(...)")
            if hidden:
                raise self.error("a hidden literal has no value to apply a function to", tok)
            return Literal(name, tuple(terms), negated=negated, function=function), weight, tok
        name, terms = self.atom_terms()
        if special:
            name = "@" + name
            if name not in BUILTINS:
                raise self.error(f"unknown built-in {name!r} (known: {', '.join(BUILTINS)})", ptok)
        return Literal(name, tuple(terms), negated=negated, hidden=hidden), weight, tok

    def function_call(self) -> bool:
        """`name(literal(...))` or `name(literal)`: a function applied to a literal (the
        PyNeuraLogic form `sqrt(h(X))`); a term list never holds a name followed by `(` or `)`
        alone after a lower-case name that is a known function."""
        t = self.tok
        if t.kind != "name" or ALIASES.get(t.text.lower(), t.text.lower()) not in \
                TRANSFORMATIONS + tuple(n for _, n in UNSUPPORTED):
            return False
        if self.peek().text != "(" or self.peek(2).kind != "name":
            return False
        inner = self.peek(2).text
        return inner[:1].islower() and self.peek(3).text in ("(", ")")

    def atom_terms(self):
        tok = self.name("a predicate name")
        if tok.text[:1].isupper() or tok.text[:1] == "_":
            raise self.error(f"predicate names start lower-case, got {tok.text!r}", tok)
        terms = []
        if self.at("("):
            self.i += 1
            if self.tok.kind == "name" and self.peek().text == "(":
                raise self.error(f"{tok.text}(...) wraps a literal, but {tok.text!r} is not a "
                                 f"function (known: {', '.join(TRANSFORMATIONS)})", tok)
            while True:
                t = self.tok
                if t.kind == "name":
                    text = t.text
                    if text == "_":
                        text = f"_{self.fresh}"
                        self.fresh += 1
                    terms.append(text)
                elif t.kind == "number" and re.fullmatch(r"[-+]?\d+", t.text):
                    terms.append(str(int(t.text)))
                else:
                    raise self.error(f"expected a term (Variable, constant or integer), got "
                                     f"{t.text or 'end of text'!r}")
                self.i += 1
                if self.at(","):
                    self.i += 1
                    continue
                self.expect(")", "after the terms")
                break
        return tok.text, terms

    def weight(self) -> WeightSpec | None:
        tok = self.tok
        fixed = False
        if self.at("<"):
            fixed = True
            self.i += 1
        name = ""
        if self.at("$"):
            self.i += 1
            name = self.name("a weight name after '$'").text
            if not self.at("="):
                if fixed:
                    self.expect(">", "closing the fixed weight")
                return WeightSpec(name, fixed=fixed)
            self.i += 1
        spec = None
        if self.tok.kind == "number":
            spec = WeightSpec(name, value=np.asarray(float(self.tok.text)))
            self.i += 1
        elif self.at("{"):
            # {3, 2}: dimensions; {[1, 2], [3, 4]} or {0.5, 1.5}: a value (PyNeuraLogic prints a
            # tuple weight in braces)
            j = self.i + 1
            while self.toks[j].kind == "number" or self.toks[j].text == ",":
                j += 1
            items = [t.text for t in self.toks[self.i + 1:j] if t.kind == "number"]
            if self.toks[j].text == "}" and all(x.isdigit() for x in items):
                self.i = j + 1
                dims = [int(x) for x in items]
                if not dims or min(dims) < 1 or len(dims) > 2:
                    raise self.error(f"weight dimensions are 1 or 2 positive integers, e.g. "
                                     f"{{3, 2}}, got {{{', '.join(items)}}}", tok)
                spec = WeightSpec(name, dims=tuple(dims))
            else:
                spec = WeightSpec(name, value=self.array(tok, "{", "}"))
        elif self.at("["):
            spec = WeightSpec(name, value=self.array(tok))
        elif name or fixed:
            raise self.error("expected a weight value: a number, [values] or {dims}")
        if fixed:
            self.expect(">", "closing the fixed weight")
            spec.fixed = True
        return spec

    def array(self, tok, open_="[", close="]") -> np.ndarray:
        def value(o="[", c="]"):
            if self.tok.kind == "number":
                v = float(self.tok.text)
                self.i += 1
                return v
            self.expect(o)
            items = []
            if not self.at(c):
                items.append(value())
                while self.at(","):
                    self.i += 1
                    items.append(value())
            self.expect(c, "closing the weight value")
            return items
        v = value(open_, close)
        try:
            arr = np.asarray(v, dtype=np.float64)
        except ValueError:
            raise self.error("a weight value must be rectangular", tok) from None
        if arr.ndim > 2:
            raise self.error(f"a weight has at most 2 dimensions, got shape {arr.shape}", tok)
        return arr

    def metadata(self) -> dict:
        self.expect("[")
        meta = {}
        while not self.at("]"):
            key = self.name("a metadata key")
            self.expect("=", f"after {key.text!r}")
            t = self.tok
            if t.kind not in ("name", "number"):
                raise self.error(f"expected a value for {key.text!r}")
            self.i += 1
            meta[key.text] = (t.text, t)
            if t.kind == "name" and self.at("("):  # softmax(agg_terms=[J, K])
                self.i += 1
                arg = self.name("agg_terms")
                if arg.text != "agg_terms":
                    raise self.error(f"expected agg_terms=[...], got {arg.text!r}", arg)
                self.expect("=")
                self.expect("[")
                terms = [self.name("a head variable").text]
                while self.at(","):
                    self.i += 1
                    terms.append(self.name("a head variable").text)
                self.expect("]")
                self.expect(")", f"closing {t.text}(...)")
                meta["agg_terms"] = (tuple(terms), t)
            if self.at(","):
                self.i += 1
            elif not self.at("]"):
                raise self.error("expected ',' or ']' in metadata")
        self.expect("]")
        return meta

    def function(self, val, table, tok, what=""):
        text, t = val
        name = ALIASES.get(text.lower(), text.lower())
        if (what, name) in UNSUPPORTED:
            raise self.error(f"{what} {name!r} is PyNeuraLogic's but not supported by polyir: "
                             f"{UNSUPPORTED[(what, name)]}", t)
        if name not in table:
            raise self.error(f"unknown {what or 'function'} {text!r} (known: "
                             f"{', '.join(table)})", t)
        return name

    def intval(self, val, tok):
        text, t = val
        if not text.isdigit() or int(text) < 1:
            raise self.error(f"expected a positive integer, got {text!r}", t)
        return int(text)

    def boolval(self, val, tok):
        text, t = val
        if text.lower() not in ("true", "false"):
            raise self.error(f"expected true or false, got {text!r}", t)
        return text.lower() == "true"


def parse_program(text: str, path: str | None = None) -> Program:
    """Text -> Program (rules, weights as written, declarations, queries). FormatError names the
    line and column of the first problem."""
    return _Parser(text, path).parse()


def parse_rules(text: str, *, dims: dict | None = None, inputs=None, queries=None, seed: int = 0,
                dtype=np.float32, path: str | None = None) -> RuleSet:
    """Text -> ir.RuleSet (see the module docstring and `Program.to_ruleset`)."""
    prog = parse_program(text, path)
    try:
        if queries is not None:
            queries = [as_query(q) for q in queries]
        return prog.to_ruleset(dims=dims, inputs=inputs, queries=queries, seed=seed, dtype=dtype)
    except FormatError:
        raise
    except GraphError as exc:
        raise FormatError(str(exc), path=path, where="the rule set") from None


def parse_atom_query(text: str) -> Query:
    prog = parse_program(f"?- {text}.")
    return prog.queries[0]


def as_query(q) -> Query:
    """A Query from a Query, text (`"h(1)"`) or an atom object with `name` and `terms` (the
    builder's `R.h(1)`; constants may be ints or strings)."""
    if isinstance(q, Query):
        return q
    if isinstance(q, str):
        return parse_atom_query(q)
    if hasattr(q, "name") and hasattr(q, "terms"):
        return Query(str(q.name), tuple(str(t) for t in q.terms))
    raise GraphError(f"a query must be an atom, text or ir.Query, got {type(q).__name__}",
                     field="queries", fix='write R.h(1) or "h(1)"')


__all__ = ["parse_program", "parse_rules", "as_query", "tokenize"]
