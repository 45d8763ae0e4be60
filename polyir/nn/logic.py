"""Trainable logic-gate layers (difflogic / torchlogix): LogicLayer, LogicTree2d, OrPool2d,
Binarize, GroupSum.

Every relaxed two-input gate is affine in a, b and ab: G(a, b) = c0 + c1 a + c2 b + c3 ab with the
integer coefficients `polyir.ir.GATE_COEFFS` (16, 4). In train mode a gate is the softmax mixture
of the 16 gates, so its 4 coefficients are `softmax(logits) @ GATE_COEFFS`: one layer evaluates 4
numbers per neuron instead of 16 gate relaxations. In eval mode the gate is `logits.argmax(-1)`,
applied with the same formula and one-hot coefficients, which is exact on 0/1 inputs.

Wiring (`a`, `b`, `leaves`) lives in int64 buffers, so `state_dict` round-trips it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..ir import GATE_COEFFS

__all__ = ["LogicLayer", "LogicTree2d", "OrPool2d", "Binarize", "GroupSum", "gate_coefficients",
           "apply_gate", "hard_logits"]

#: Logit given to the chosen gate (others 0) when only hard gates are known (an imported graph
#: without logits): softmax puts 0.9993 on it, so train mode starts close to eval mode.
HARD_LOGIT = 10.0


def hard_logits(gates, dtype=torch.float32) -> torch.Tensor:
    """(..., 16) logits whose argmax is `gates` (HARD_LOGIT at the gate, 0 elsewhere)."""
    g = torch.from_numpy(np.array(gates, dtype=np.int64))
    return F.one_hot(g, 16).to(dtype) * HARD_LOGIT


def gate_coefficients(logits: torch.Tensor, hard: bool) -> torch.Tensor:
    """(..., 16) logits -> (..., 4) coefficients c0..c3: softmax mixture, or the argmax gate's."""
    table = torch.as_tensor(GATE_COEFFS, dtype=logits.dtype, device=logits.device)
    if hard:
        return table[logits.argmax(-1)]
    return torch.softmax(logits, dim=-1) @ table


def apply_gate(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """c0 + c1 a + c2 b + c3 ab with c (..., 4) broadcast against a and b.

    Evaluated as ((c2 + c3 a) b + c1 a) + c0 with contiguous coefficient rows and in-place updates
    of the one fresh temporary: 5x faster than the plain expression on CPU, same gradients (none of
    the in-place steps overwrites a value autograd saved)."""
    c0, c1, c2, c3 = c.movedim(-1, 0).contiguous().unbind(0)
    out = torch.addcmul(c2, c3, a)
    out.mul_(b)
    out.addcmul_(c1, a)
    return out.add_(c0)


def _generator(seed):
    return None if seed is None else torch.Generator().manual_seed(int(seed))


def random_connections(in_dim: int, out_dim: int, rng: np.random.Generator):
    """Each output reads two random distinct inputs (the same input twice only if in_dim == 1)."""
    a = rng.integers(0, in_dim, out_dim)
    if in_dim == 1:
        return a, a.copy()
    b = (a + rng.integers(1, in_dim, out_dim)) % in_dim  # uniform over the other inputs
    return a, b


def unique_connections(in_dim: int, out_dim: int, rng: np.random.Generator):
    """difflogic's 'unique' wiring: every input is read, and no (unordered) pair repeats while
    distinct pairs remain. Needs 2 * out_dim >= in_dim."""
    if in_dim == 1:
        z = np.zeros(out_dim, np.int64)
        return z, z.copy()
    if 2 * out_dim < in_dim:
        raise ValueError(f"connections='unique' needs 2 * out_dim >= in_dim to read every input; "
                         f"got in_dim={in_dim}, out_dim={out_dim} (use connections='random')")
    perm = rng.permutation(in_dim)
    if in_dim % 2:  # pair the odd one out with a random other input
        perm = np.append(perm, rng.choice(perm[:-1]))
    pairs = [perm.reshape(-1, 2)]
    lo, hi = pairs[0].min(1), pairs[0].max(1)
    used = set((lo * in_dim + hi).tolist())
    n_pairs = in_dim * (in_dim - 1) // 2
    need = out_dim - len(pairs[0])
    while need > 0:
        if len(used) >= n_pairs:  # every pair taken: start over (repetition is now unavoidable)
            used = set()
        want = min(need, n_pairs - len(used))
        cand_a = rng.integers(0, in_dim, 2 * want + 16)
        cand_b = (cand_a + rng.integers(1, in_dim, cand_a.size)) % in_dim
        lo, hi = np.minimum(cand_a, cand_b), np.maximum(cand_a, cand_b)
        keys, first = np.unique(lo * in_dim + hi, return_index=True)
        fresh = [k for k in keys[np.argsort(first)].tolist() if k not in used][:want]
        used.update(fresh)
        fresh = np.asarray(fresh, np.int64)
        pairs.append(np.stack([fresh // in_dim, fresh % in_dim], 1))
        need -= len(fresh)
    pairs = np.concatenate(pairs)[:out_dim]
    pairs = pairs[rng.permutation(out_dim)]
    flip = rng.random(out_dim) < 0.5
    pairs[flip] = pairs[flip][:, ::-1]
    return pairs[:, 0].copy(), pairs[:, 1].copy()


class LogicLayer(nn.Module):
    """A layer of `out_dim` two-input logic gates: out[j] = G_j(x[a[j]], x[b[j]]).

    Input (batch, in_dim), values in [0, 1] (bits in eval). train(): relaxed, the softmax mixture
    of the 16 gates as 4 coefficients; eval(): the hard argmax gate. `connections` is "random",
    "unique" (difflogic's: every input read, no repeated pair), or a pair of index arrays (a, b).
    """

    def __init__(self, in_dim: int, out_dim: int, connections="random", seed: int | None = None,
                 grad_factor: float = 1.0):
        super().__init__()
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.grad_factor = float(grad_factor)  # difflogic's: scales the gradient of the input
        if isinstance(connections, str):
            rng = np.random.default_rng(seed)
            if connections == "random":
                a, b = random_connections(self.in_dim, self.out_dim, rng)
            elif connections == "unique":
                a, b = unique_connections(self.in_dim, self.out_dim, rng)
            else:
                raise ValueError(f"connections={connections!r}: use 'random', 'unique' or (a, b)")
        else:
            a, b = (c.detach().cpu().numpy().astype(np.int64) if isinstance(c, torch.Tensor)
                    else np.array(c, dtype=np.int64) for c in connections)
            if a.shape != (self.out_dim,) or b.shape != (self.out_dim,):
                raise ValueError(f"connections (a, b) must each have shape ({self.out_dim},), got "
                                 f"{a.shape} and {b.shape}")
            for idx in (a, b):
                if idx.size and (idx.min() < 0 or idx.max() >= self.in_dim):
                    raise ValueError(f"connection index out of range 0..{self.in_dim - 1}")
        self.register_buffer("a", torch.as_tensor(a, dtype=torch.int64))
        self.register_buffer("b", torch.as_tensor(b, dtype=torch.int64))
        self.logits = nn.Parameter(torch.randn(self.out_dim, 16, generator=_generator(seed)))

    @property
    def gate(self) -> torch.Tensor:
        """The hard gate of each neuron (int64, difflogic's order)."""
        return self.logits.detach().argmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_factor != 1.0:
            x = GradFactor.apply(x, self.grad_factor)
        c = gate_coefficients(self.logits, hard=not self.training).to(x.dtype)
        dim = x.dim() - 1  # index_select: faster than x[..., a] forward and backward on CPU
        return apply_gate(c, torch.index_select(x, dim, self.a), torch.index_select(x, dim, self.b))

    def extra_repr(self):
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}" + (
            f", grad_factor={self.grad_factor}" if self.grad_factor != 1.0 else "")


class GradFactor(torch.autograd.Function):
    """The identity forward; the gradient multiplied by `factor` backward (difflogic's
    grad_factor, which keeps gradients from vanishing through deep logic stacks)."""

    @staticmethod
    def forward(ctx, x, factor: float):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected an int or a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


class LogicTree2d(nn.Module):
    """Logic convolution (torchlogix LogicConv2d): per kernel k and output position, 2**depth
    leaves `leaves[k, l] = (channel, dy, dx)` are read from the zero-padded receptive field and
    reduced by a binary tree of gates, level 0 first (gate i combines leaves 2i as a and 2i+1 as
    b), each higher level combining the previous level's results pairwise the same way.

    Input (B, C, H, W), output (B, K, OH, OW), OH = (H + 2 pad - kh) // stride + 1.
    """

    def __init__(self, in_channels: int, num_kernels: int, depth: int, kernel_size, stride=1,
                 padding=0, seed: int | None = None):
        super().__init__()
        self.in_channels, self.num_kernels, self.depth = int(in_channels), int(num_kernels), int(depth)
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        rng = np.random.default_rng(seed)
        n = 2 ** self.depth
        leaves = np.stack([rng.integers(0, self.in_channels, (self.num_kernels, n)),
                           rng.integers(0, self.kernel_size[0], (self.num_kernels, n)),
                           rng.integers(0, self.kernel_size[1], (self.num_kernels, n))], -1)
        self.register_buffer("leaves", torch.as_tensor(leaves, dtype=torch.int64))
        self.logits = nn.Parameter(torch.randn(self.num_kernels, n - 1, 16,
                                               generator=_generator(seed)))

    @property
    def gates(self) -> torch.Tensor:
        return self.logits.detach().argmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))  # (B, C*kh*kw, L)
        flat = (self.leaves[..., 0] * kh + self.leaves[..., 1]) * kw + self.leaves[..., 2]
        vals = cols[:, flat.reshape(-1)].reshape(bsz, self.num_kernels, -1, oh * ow)
        coeffs = gate_coefficients(self.logits, hard=not self.training).to(x.dtype)
        start = 0
        while vals.shape[2] > 1:
            half = vals.shape[2] // 2
            c = coeffs[None, :, start:start + half, None, :]  # (1, K, half, 1, 4)
            vals = apply_gate(c, vals[:, :, 0::2], vals[:, :, 1::2])
            start += half
        return vals.reshape(bsz, self.num_kernels, oh, ow)

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, num_kernels={self.num_kernels}, "
                f"depth={self.depth}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")


class Window2d(nn.Module):
    """Base of the 2-D window layers: (kernel_size, stride, padding) as pairs, zero padding."""

    def __init__(self, kernel_size, stride, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)

    def padded(self, x):
        ph, pw = self.padding
        return F.pad(x, (pw, pw, ph, ph)) if ph or pw else x

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class OrPool2d(Window2d):
    """OR (max) over each window of a (B, C, H, W) input; padding reads 0 (not -inf)."""

    def forward(self, x):
        return F.max_pool2d(self.padded(x), self.kernel_size, self.stride)


class Binarize(nn.Module):
    """Thermometer encoding, bit = x > t strictly, as float 0/1 in the IR layout.

    thresholds (T,) are shared by every element, (S[axis], T) are per index along `axis`, or
    (*S, T) per element (S = input shape without batch). The T bits of an element are folded into
    `axis`: element i of that axis gives output bits i*T .. i*T + T-1. No gradient flows through,
    unless straight_through=True: then each bit's gradient reaches its element unchanged.
    """

    def __init__(self, thresholds, axis: int = 0, straight_through: bool = False):
        super().__init__()
        # straight-through: bits forward, the identity's gradient backward (each bit passes
        # d loss / d bit to its element), so a model with a logic head trains end to end
        self.straight_through = bool(straight_through)
        th = torch.as_tensor(thresholds)
        if not th.is_floating_point():
            th = th.to(torch.get_default_dtype())
        if th.ndim < 1 or th.shape[-1] < 1:
            raise ValueError("Binarize needs at least one threshold, shape (T,)")
        self.register_buffer("thresholds", th.clone())
        self.axis = int(axis)

    def forward(self, x):
        shape = x.shape[1:]
        ax = self.axis + len(shape) if self.axis < 0 else self.axis
        th = self.thresholds.to(x.dtype)
        t = th.shape[-1]
        if th.ndim == 1 or th.ndim == len(shape) + 1:
            pass  # shared, or per element: broadcasts against (B, *S, T) as it is
        elif th.ndim == 2:
            th = th.reshape((1,) * ax + (shape[ax],) + (1,) * (len(shape) - ax - 1) + (t,))
        else:
            raise ValueError(f"thresholds {tuple(th.shape)} fit neither (T,), (S[axis], T) nor "
                             f"{tuple(shape) + ('T',)}")
        bits = (x.unsqueeze(-1) > th).to(x.dtype)  # (B, *S, T)
        if self.straight_through and x.requires_grad:
            xs = x.unsqueeze(-1).expand_as(bits)
            bits = bits + (xs - xs.detach())
        bits = bits.movedim(-1, ax + 2)  # (B, S0.., S_ax, T, ...)
        return bits.flatten(ax + 1, ax + 2)

    def extra_repr(self):
        return f"thresholds={tuple(self.thresholds.shape)}, axis={self.axis}" + (
            ", straight_through=True" if self.straight_through else "")


class GroupSum(nn.Module):
    """y_c = (sum of the inputs in group c + beta) / tau over k equal contiguous groups."""

    def __init__(self, k: int, tau: float = 1.0, beta: float = 0.0):
        super().__init__()
        self.k, self.tau, self.beta = int(k), float(tau), float(beta)
        if self.k < 1 or self.tau == 0:
            raise ValueError(f"GroupSum needs k >= 1 and tau != 0, got k={k}, tau={tau}")

    def forward(self, x):
        if x.shape[-1] % self.k:
            raise ValueError(f"GroupSum: width {x.shape[-1]} is not divisible by k={self.k}")
        s = x.reshape(*x.shape[:-1], self.k, x.shape[-1] // self.k).sum(-1)
        if self.beta:
            s = s + self.beta
        return s / self.tau

    def extra_repr(self):
        return f"k={self.k}, tau={self.tau}, beta={self.beta}"
