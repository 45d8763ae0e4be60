"""The text form of a RuleSet (PyNeuraLogic's printed template syntax), in one import place:
reading it is polyir.ir.rules_parser (the syntax is written there), printing it
polyir.ir.rules_printer, and the rule program between text and RuleSet polyir.ir.rules_program.

    rs = parse_rules("{1, 8} xor :- xy.")
    text = format_ruleset(rs)          # parses back to an equal RuleSet
"""
from __future__ import annotations

from .rules_parser import as_query, parse_program, parse_rules, tokenize
from .rules_printer import describe, format_rule, format_ruleset, format_weight
from .rules_program import Program, WeightSpec, infer_dims

__all__ = ["Program", "WeightSpec", "parse_program", "parse_rules", "as_query", "format_ruleset",
           "format_rule", "format_weight", "describe", "infer_dims", "tokenize"]
