"""Export handler for polyir.nn.rules.RuleLayer: the layer's RuleSet (current weights) between
an Input and an Output, so that the traced value feeds the RuleSet's one input port (named by its
input predicate). Only the propositional form can be traced: one arity-0 input predicate whose
(batch, dim) tensor is the value flowing through the model; relational inputs (facts) are not
tensors fx can trace, and the handler says so."""
from __future__ import annotations

from ... import ir
from ...nn.rules import RuleLayer
from . import handler


@handler(RuleLayer, builtin=True)
def _rule_layer(ctx, name, m, values):
    rs = m.to_ir()
    inputs = [p for p in rs.predicates if p.input]
    if len(inputs) != 1 or inputs[0].arity != 0:
        raise ctx.error(f"a traced RuleLayer takes one tensor, but its input predicates are "
                        f"{[f'{p.name}/{p.arity}' for p in inputs]}", field="predicates",
                        fix="export the RuleSet directly (layer.to_ir()) into a Graph whose "
                            "Inputs are its input predicates")
    p = inputs[0]
    dtype = getattr(ctx, "float_dtype", None)
    if dtype is not None:
        rs = rs.replace(weights={k: v.astype(dtype) for k, v in rs.weights.items()})
    g = ir.Graph()
    g.add("input", ir.Input((p.dim,)))
    g.add("rules", rs)
    g.add("output", ir.Output(rs.out_port({}).shape))
    g.connect("input", "rules", p.name)
    g.connect("rules", "output")
    return g
