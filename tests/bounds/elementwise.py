"""Error bounds of the decoder's elementwise ops, silu_and_mul and apply_rotary (forward and gradients), against fp64,
derived from the computation; tests/error_bounds.py states the rounding model.

No reduction reorders between machines here, but the values are not all of the size of their result, so the bounds
follow each computation's terms. Both CPU backends are held to one bound: the `cpp` kernels compute in fp32 and round
once into the output dtype; the torch reference in a half dtype rounds after each of its elementwise ops, counted
here as u_half per op (none for fp32, whose roundings the fp32 terms count), or half a subnormal spacing for a value
in fp16's subnormal range.

silu_and_mul, y = g sigmoid(g) u: a product of factors each with a relative error (exp within 2 u, the sigmoid's sum
and division, two products: 16 u counts them with margin) and two half roundings for the reference (silu, then the
product). Its gradients: grad_up = d silu(g) is a product too; grad_gate = d u sig (1 + g (1 - sig)) cancels near
g = -1.28, so its bound is relative to the terms' magnitudes d u sig (1 + |g| (1 - sig)), with three half roundings
for the reference (d u, silu's backward, the product).

apply_rotary, out = [x1 c1 - x2 s1, x2 c2 + x1 s2] (the backward applies the transpose to the gradient): each value is
a two-term sum, bounded by a few roundings of its terms' magnitudes, plus for a half reference the casts of cos and
sin, the products and the sum (four u_half), and one rounding into the output.
"""

from __future__ import annotations

import torch

from tests.error_bounds import rounding, unit_roundoff

U32 = unit_roundoff(torch.float32)


def _half(dtype: torch.dtype) -> float:
    return 0.0 if dtype in (torch.float32, torch.float64) else unit_roundoff(dtype)


def _half_floor(dtype: torch.dtype) -> float:
    """A half rounding's absolute error in the subnormal range (half the smallest subnormal), 0 for fp32."""
    info = torch.finfo(dtype)
    return 0.0 if dtype in (torch.float32, torch.float64) else info.tiny * info.eps / 2


def silu_and_mul_bound(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    g, u = gate.detach().double().cpu(), up.detach().double().cpu()
    y = (g * torch.sigmoid(g) * u).abs()
    return y * (16 * U32 + 2 * _half(gate.dtype)) + 2 * _half_floor(gate.dtype) + rounding(y, gate.dtype)


def silu_and_mul_grad_bounds(gate: torch.Tensor, up: torch.Tensor, grad: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on (grad_gate, grad_up), in gate's dtype."""
    g, u, d = (t.detach().double().cpu() for t in (gate, up, grad))
    sig = torch.sigmoid(g)
    rel = 16 * U32 + 3 * _half(gate.dtype)
    terms = (d * u).abs() * sig * (1 + g.abs() * (1 - sig))
    grad_gate = (d * u * sig * (1 + g * (1 - sig))).abs()
    grad_up = (d * g * sig).abs()
    floor = 3 * _half_floor(gate.dtype)
    return terms * rel + floor + rounding(grad_gate, gate.dtype), grad_up * rel + floor + rounding(grad_up, gate.dtype)


def rotary_bound(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """x [N, H, D] (q, k, or their gradients for transpose=True), cos/sin [N, D] -> the bound [N, H, D]."""
    half = x.shape[-1] // 2
    ax = x.detach().double().cpu().abs()
    c = cos.detach().double().cpu().abs().unsqueeze(1)  # [N, 1, D]
    s = sin.detach().double().cpu().abs().unsqueeze(1)
    x1, x2 = ax[..., :half], ax[..., half:]
    s1, s2 = s[..., :half], s[..., half:]
    other1, other2 = (x2 * s2, x1 * s1) if transpose else (x2 * s1, x1 * s2)
    terms = torch.cat((x1 * c[..., :half] + other1, x2 * c[..., half:] + other2), dim=-1)
    return terms * (4 * U32 + 4 * _half(x.dtype)) + 4 * _half_floor(x.dtype) + rounding(terms, x.dtype)
