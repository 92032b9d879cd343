"""Error bounds of RMSNorm (forward and both gradients) against fp64, derived from the computation;
tests/error_bounds.py states the rounding model.

Forward y = w * cast_x(x r), r = rsqrt(mean(x^2) + eps), statistics in fp32 (u):
- mean(x^2) sums H positive terms: relative error LAMBDA sqrt(H) u plus the squares' and the division's 2 u; rsqrt
  halves that and adds its own 4 u (libm, SLEEF, a GPU's rsqrt.approx within 2 ulp): r's relative error is
  rel_r = (LAMBDA sqrt(H) / 2 + 6) u;
- n = x r one more u, then rounding into x's dtype (u_x, none for fp32), the product with w one u and the rounding
  into the output dtype u_out.
Backward, with g_n = gy w and c = mean(g_n n) (a sum of H products: LAMBDA sqrt(H) u sum |g_n n| / H):
gx = r (g_n - n c) carries rel_r on r and n, the sum's error on c, and four roundings of its terms' magnitudes
M = r (|g_n| + |n| |c|); gw = sum over the N rows of gy cast_x(n): LAMBDA sqrt(N) u sum |gy n| (partial sums per
program, then across programs) plus, for a half x, the rounding of each n to x's dtype that the reference (in fp64)
does not do, and one rounding into w's dtype.
"""

from __future__ import annotations

import math

import torch

from tests.error_bounds import LAMBDA, rounding, unit_roundoff

U32 = unit_roundoff(torch.float32)


def _half(dtype: torch.dtype) -> float:
    return 0.0 if dtype in (torch.float32, torch.float64) else unit_roundoff(dtype)


def _stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    x64 = x.detach().double().cpu()
    r = torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps)  # [..., 1]
    rel_r = (LAMBDA * math.sqrt(x.shape[-1]) / 2 + 6) * U32
    return x64, r, rel_r


def rms_norm_bound(x: torch.Tensor, weight: torch.Tensor, eps: float, output: torch.dtype) -> torch.Tensor:
    """Bound on |y - y64| element-wise, y64 the fp64 reference without any intermediate rounding."""
    x64, r, rel_r = _stats(x, eps)
    w = weight.detach().double().cpu().abs()
    n = (x64 * r).abs()
    y = w * n
    return (rel_r + 2 * U32 + _half(x.dtype)) * y + rounding(y * (1 + rel_r + 2 * U32 + _half(x.dtype)), output)


def rms_norm_grad_bounds(x: torch.Tensor, weight: torch.Tensor, grad_y: torch.Tensor, eps: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on (grad_x [..., H] in x's dtype, grad_weight [H] in weight's dtype), x [..., H]."""
    x64, r, rel_r = _stats(x, eps)
    hidden = x.shape[-1]
    gy = grad_y.detach().double().cpu()
    w = weight.detach().double().cpu()
    n = x64 * r
    g_n = gy * w
    c = (g_n * n).mean(-1, keepdim=True)
    c_error = (LAMBDA * math.sqrt(hidden) + 2) * U32 * (g_n * n).abs().mean(-1, keepdim=True) + 2 * rel_r * c.abs()
    magnitude = r * (g_n.abs() + n.abs() * c.abs())
    gx = r * (g_n - n * c)
    bound_x = (2 * rel_r + 4 * U32) * magnitude + r * n.abs() * c_error
    bound_x = bound_x + rounding(gx.abs() + bound_x, x.dtype)
    rows = gy.reshape(-1, hidden)
    terms = (rows * n.reshape(-1, hidden)).abs()  # [N, H]
    rows_count = rows.shape[0]
    gw = (rows * n.reshape(-1, hidden)).sum(0)
    bound_w = ((LAMBDA * math.sqrt(rows_count) + 2) * U32 + rel_r + _half(x.dtype)) * terms.sum(0)
    bound_w = bound_w + rounding(gw.abs() + bound_w, weight.dtype)
    return bound_x, bound_w
