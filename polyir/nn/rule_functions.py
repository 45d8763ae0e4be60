"""The tensor functions a RuleLayer (polyir.nn.rules) applies per rule: PyNeuraLogic's
transformations, combinations and aggregations by name (one table entry per name, PyNeuraLogic's
own definitions), the combination of an atom's contributions, and the CSR sparse product that
evaluates a rule linear in one literal (forward and its precomputed transpose for backward)."""
from __future__ import annotations

import warnings

import torch

from ..ir import GraphError

# the sparse products below use CSR tensors, which torch calls beta (its API, not our numbers)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state",
                        category=UserWarning)


def _nonnegative(name, fn):
    def apply(x):
        if bool((x.detach() < 0).any()):
            bad = float(x.detach()[x.detach() < 0].reshape(-1)[0])
            raise GraphError(f"{name} of a negative value ({bad:g})", field="transformation",
                             fix=f"keep the argument of {name} non-negative (e.g. a relu or exp "
                                 "before it, or non-negative fact values)")
        return fn(x)
    return apply


def _lukasiewicz(x):
    # PyNeuraLogic's LukasiewiczSigmoid: a sigmoid steepened to approximate min(1, max(0, x)),
    # 1 / (1 + exp(-6x - 0.5)), saturated to exactly 0 / 1 beyond |x| > 100
    s = torch.sigmoid(6.0 * x + 0.5)
    return torch.where(x > 100, torch.ones_like(s), torch.where(x < -100, torch.zeros_like(s), s))


class _Step(torch.autograd.Function):
    """PyNeuraLogic's signum: 1 where x > 0, else 0, with a zero gradient."""

    @staticmethod
    def forward(ctx, x):
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


#: transformation name -> elementwise (or, for softmax, whole-vector) function
TRANSFORMS = {
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda x: torch.nn.functional.leaky_relu(x, 0.01),
    "exp": torch.exp,
    "softmax": lambda x: torch.softmax(x, -1),
    "sqrt": _nonnegative("sqrt", torch.sqrt),
    "log": _nonnegative("log", torch.log),
    "inverse": lambda x: 1.0 / x,
    "reverse": lambda x: 1.0 - x,
    "signum": _Step.apply,
    "sign": torch.sign,  # polyir's three-valued sign (-1, 0, 1); not a PyNeuraLogic function
    "lukasiewicz": _lukasiewicz,
}


def transform(name: str, x: torch.Tensor) -> torch.Tensor:
    if name not in TRANSFORMS:
        raise GraphError(f"unknown transformation {name!r}", field="transformation",
                         fix=f"use one of {sorted(TRANSFORMS)}")
    return TRANSFORMS[name](x)


def _broadcast(parts):
    d = max(p.shape[-1] for p in parts)
    return [p.expand(p.shape[0], d) if p.shape[-1] != d else p for p in parts]


def _pick_by_sum(parts, largest: bool):
    """PyNeuraLogic's max / min of values: the whole value with the largest (smallest) element
    sum, the first on ties (a 1-dim value compares by itself and broadcasts if chosen)."""
    sums = torch.stack([p.detach().sum(-1) for p in parts], -1)
    k = sums.argmax(-1) if largest else sums.argmin(-1)
    stack = torch.stack(_broadcast(parts), 1)
    return stack[torch.arange(stack.shape[0], device=stack.device), k]


def _crossum(parts):
    out = parts[0]
    for x in parts[1:]:
        out = (out[:, :, None] + x[:, None, :]).reshape(out.shape[0], -1)
    return out


def _cosim(parts):
    a, b = parts
    return ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)))[:, None]


def _softmax_comb(parts):
    if len(parts) == 1:
        return torch.softmax(parts[0], -1)
    return torch.softmax(torch.cat(parts, -1), -1)


def _product(parts):
    out = parts[0]
    for x in parts[1:]:
        out = out * x
    return out


#: combination name -> function of the visible literals' values (each (groundings, d_i))
COMBINE = {
    "sum": lambda parts: sum(_broadcast(parts)),
    "avg": lambda parts: sum(_broadcast(parts)) / len(parts),
    "max": lambda parts: _pick_by_sum(parts, True),
    "min": lambda parts: _pick_by_sum(parts, False),
    "elproduct": _product,
    "product": _product,  # at most one vector among scalars (checked by RuleSet.rule_dim)
    "concat": lambda parts: torch.cat(parts, -1),
    "crossum": _crossum,
    "cosim": _cosim,
    "softmax": _softmax_comb,
}


def combine(name: str, parts: list) -> torch.Tensor:
    return parts[0] if len(parts) == 1 and name in ("sum", "avg", "max", "min", "elproduct",
                                                    "product", "concat") else COMBINE[name](parts)


def aggregate(name: str, z: torch.Tensor, head: torch.Tensor, counts: torch.Tensor,
               n: int) -> torch.Tensor:
    """Agg_r over the groundings of each head atom: rows 0..n-1 (atoms without a grounding
    get 0)."""
    d = z.shape[-1]
    if name == "count":  # PyNeuraLogic: the number of groundings, a scalar without a gradient
        return counts.to(z.dtype)[:, None]
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


def softmax_aggregate(z, head, group, n):
    """PyNeuraLogic's softmax aggregation with agg_terms: each grounding's share of the softmax
    over its group (the groundings of the atoms that differ only in the agg_terms), summed per
    head atom (one grounding per atom, as in attention: softmax_J s(I, J))."""
    g = group[head]
    s = z[:, 0]
    top = s.detach().new_full((int(group.max()) + 1 if len(group) else 0,), float("-inf"))
    top = top.scatter_reduce(0, g, s.detach(), "amax")
    e = torch.exp(s - top[g])
    total = e.new_zeros(top.shape).index_add_(0, g, e)
    return z.new_zeros((n, 1)).index_add_(0, head, (e / total[g])[:, None])


def combine_atom(name: str, parts: list, present: list) -> torch.Tensor:
    """Comb_h over the contributions (rules, template facts) to each atom; `present[k]` marks
    the atoms contribution k reaches (others take no part, as in PyNeuraLogic's atom neuron)."""
    if len(parts) == 1 or name == "sum":
        return sum(_broadcast(parts)) if len(parts) > 1 else parts[0]
    parts = _broadcast(parts)
    mask = torch.stack(present, 0)[:, :, None]
    stack = torch.stack(parts, 0)
    if name == "avg":
        return (stack * mask).sum(0) / mask.sum(0).clamp(min=1)
    if name in ("product", "elproduct"):
        return torch.where(mask, stack, torch.ones_like(stack)).prod(0)
    s = stack.detach().sum(-1, keepdim=True)
    s = torch.where(mask, s if name == "max" else -s, torch.full_like(s, float("-inf")))
    k = s.argmax(0)
    return stack.gather(0, k[None].expand(1, *stack.shape[1:]))[0]


def _csr(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int):
    """CSR index arrays of the entries (rows[g], cols[g]) and the permutation that orders the
    per-grounding values into them (duplicates stay separate entries: their sum is the product's)."""
    order = torch.argsort(rows * max(n_cols, 1) + cols)
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return crow, cols[order].contiguous(), order


class GatherScatter(torch.autograd.Function):
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


def spmm_structure(head, idx, n_rows, n_cols):
    crow, col, perm = _csr(head, idx, n_rows, n_cols)
    crow_t, col_t, perm_t = _csr(idx, head, n_cols, n_rows)
    return {"crow": crow, "col": col, "perm": perm, "crow_t": crow_t, "col_t": col_t,
            "perm_t": perm_t, "n_rows": n_rows, "n_cols": n_cols, "head": head, "idx": idx}


__all__ = ["TRANSFORMS", "COMBINE", "transform", "combine", "aggregate", "softmax_aggregate",
           "combine_atom", "GatherScatter", "spmm_structure"]
