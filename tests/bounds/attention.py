"""Error bounds of attention (varlen, shared-prefix, paged decode and prefill) against fp64, derived from the
computation; tests/error_bounds.py states the rounding model.

Forward, per query row and head, with scores s_j = scale q . k_j over the n visible keys:
- a score carries its dot product's error, (LAMBDA sqrt(D) + 3) u scale sum_d |q_d| |k_jd| (the product, the scale
  and the fold into exp2's base), plus, when the kernel rounds q to a half cache dtype for a half dot, u_half of it;
- the weights p_j = exp(s_j - lse) then carry that score error and lse's (tests/bounds/softmax.py: the normalizer's
  sum, the online rescales, exp, log), so |dp_j| <= p_j (ds_j + d lse + 4 u);
- the output o = sum_j p_j v_j adds (LAMBDA sqrt(n) + 2) u sum_j p_j |v_j| (its own sum, the final division), twice
  u_half of that when the weights are rounded to a half dtype for the P x V dot (the running sum adds the rounded
  weights, so numerator and denominator each see one rounding), and one rounding into the output dtype.
Backward (dense, for the shared-prefix op): dV = P^T dO, dP = dO V^T, dS = P (dP - rowsum(dO o)), dQ = scale dS K,
dK = scale dS^T Q, each product bounded by LAMBDA sqrt(K) u times its terms' magnitudes plus the operands' errors.
"""

from __future__ import annotations

import math

import torch

from tests.bounds.softmax import softmax_rows
from tests.error_bounds import LAMBDA, rounding, unit_roundoff

U32 = unit_roundoff(torch.float32)


def _expand(t: torch.Tensor, heads: int) -> torch.Tensor:
    # [n, Hkv, D] -> [Hq, n, D] fp64 (each kv head serves heads / Hkv query heads)
    return t.double().cpu().repeat_interleave(heads // t.shape[1], dim=1).transpose(0, 1)


def attention_with_bound(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor, scale: float,
                         output: torch.dtype, half: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """q [t, Hq, D], k/v [n, Hkv, D] as the kernel reads them, visible [t, n] bool -> (out, bound) [t, Hq, D] in
    fp64. `half`: the dtype q and the weights are rounded to for half dots (None: fp32 dots)."""
    heads = q.shape[1]
    qd = q.double().cpu().transpose(0, 1)  # [H, t, D]
    kd, vd = _expand(k, heads), _expand(v, heads)  # [H, n, D]
    scores = scale * qd @ kd.transpose(1, 2)  # [H, t, n]
    magnitude = abs(scale) * qd.abs() @ kd.abs().transpose(1, 2)
    score_error = (LAMBDA * math.sqrt(q.shape[-1]) + 3) * U32 * magnitude
    if half is not None:
        score_error = score_error + unit_roundoff(half) * magnitude
    hidden = ~visible.cpu()[None]
    rows = softmax_rows(scores.masked_fill(hidden, float("-inf")).flatten(0, 1), 1.0, score_error.flatten(0, 1))
    p = rows.logp.exp().view(scores.shape)  # [H, t, n]
    out = p @ vd  # [H, t, D]
    weights_error = p * (rows.z_error.view(scores.shape) + rows.lse_error.view(*scores.shape[:2], 1) + 4 * U32)
    spread = p @ vd.abs()  # sum_j p_j |v_j|
    n = visible.sum(-1).clamp(min=1).double().view(1, -1, 1)  # [1, t, 1] visible keys per query
    rounds = (LAMBDA * n.sqrt() + 2) * U32 + (2 * unit_roundoff(half) if half is not None else 0.0)
    bound = weights_error @ vd.abs() + rounds * spread
    bound = bound + rounding(out.abs() + bound, output)
    return out.transpose(0, 1), bound.transpose(0, 1)


def paged_attention_with_bound(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tables: torch.Tensor,
                               lens: torch.Tensor, q_lens: list[int], scale: float, output: torch.dtype,
                               half: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed q [N, Hq, D] whose sequence b has q_lens[b] queries, the last of its context, over the block-table
    cache (position p of b at block tables[b, p // block_size], row p % block_size) -> (out, bound) [N, Hq, D]."""
    block_size, hkv, d = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    outs, bounds, row = [], [], 0
    for b, (ctx, t) in enumerate(zip(lens.tolist(), q_lens, strict=True)):
        if ctx == 0:  # nothing to attend to: the output is zeros, exactly
            outs.append(torch.zeros(t, q.shape[1], d, dtype=torch.float64))
            bounds.append(torch.zeros(t, q.shape[1], d, dtype=torch.float64))
            row += t
            continue
        p = torch.arange(ctx)
        slots = tables[b].cpu().long()[p // block_size] * block_size + p % block_size
        keys, values = k_cache.reshape(-1, hkv, d)[slots.to(k_cache.device)], v_cache.reshape(-1, hkv, d)[
            slots.to(v_cache.device)]
        visible = torch.arange(ctx)[None, :] <= torch.arange(ctx - t, ctx)[:, None]  # [t, ctx] causal
        out, bound = attention_with_bound(q[row : row + t], keys, values, visible, scale, output, half)
        outs.append(out)
        bounds.append(bound)
        row += t
    return torch.cat(outs), torch.cat(bounds)


def attention_grad_bounds(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor, scale: float,
                          grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 backward of packed attention with a dense mask visible [N, N]: bounds on (dq [N, Hq, D], dk, dv
    [N, Hkv, D]), each kv head summing its query heads' contributions."""
    heads, kv_heads = q.shape[1], k.shape[1]
    out, out_bound = attention_with_bound(q, k, v, visible, scale, torch.float32)
    qd = q.double().transpose(0, 1)
    kd, vd = _expand(k, heads), _expand(v, heads)
    g = grad_out.double().transpose(0, 1)  # [H, N, D]
    o, o_err = out.transpose(0, 1), out_bound.transpose(0, 1)
    length_d, length_n = math.sqrt(q.shape[-1]), math.sqrt(q.shape[0])
    scores = (scale * qd @ kd.transpose(1, 2)).masked_fill(~visible[None], float("-inf"))
    p = scores.softmax(-1)  # [H, N, N]
    s_err = (LAMBDA * length_d + 3) * U32 * abs(scale) * (qd.abs() @ kd.abs().transpose(1, 2))
    p_err = p * (2 * s_err.masked_fill(~visible[None], 0.0).amax(-1, keepdim=True) + (LAMBDA * length_n + 8) * U32)
    # dV = P^T dO
    dv_err = (LAMBDA * length_n * U32) * (p.transpose(1, 2) @ g.abs()) + p_err.transpose(1, 2) @ g.abs()
    # dP = dO V^T; D = rowsum(dO * O); dS = P (dP - D)
    dp = g @ vd.transpose(1, 2)
    dp_err = LAMBDA * length_d * U32 * (g.abs() @ vd.abs().transpose(1, 2))
    delta = (g * o).sum(-1, keepdim=True)
    delta_err = LAMBDA * length_d * U32 * (g.abs() * o.abs()).sum(-1, keepdim=True) + (g.abs() * o_err).sum(-1,
                                                                                                        keepdim=True)
    ds = p * (dp - delta)
    ds_err = p * (dp_err + delta_err) + p_err * (dp - delta).abs() + 2 * U32 * ds.abs()
    # dQ = scale dS K, dK = scale dS^T Q
    dq_err = abs(scale) * (LAMBDA * length_n * U32 * (ds.abs() @ kd.abs()) + ds_err @ kd.abs()) + U32 * abs(
        scale) * (ds @ kd).abs()
    dk_err = abs(scale) * (LAMBDA * length_n * U32 * (ds.abs().transpose(1, 2) @ qd.abs())
                           + ds_err.transpose(1, 2) @ qd.abs())

    def per_kv_head(t: torch.Tensor) -> torch.Tensor:  # [Hq, N, D] -> [N, Hkv, D], query heads' bounds added
        return t.view(kv_heads, heads // kv_heads, *t.shape[1:]).sum(1).transpose(0, 1) * (
            1 + LAMBDA * math.sqrt(heads // kv_heads) * U32)

    return dq_err.transpose(0, 1), per_kv_head(dk_err), per_kv_head(dv_err)
