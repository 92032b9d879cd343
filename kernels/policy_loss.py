"""Clipped policy-gradient loss in Triton: per-token loss, its reductions and d loss / d logprobs in one fused forward.

The semantics (ratio levels, clipping, dual clip, token weights, KL estimators, aggregations, metrics) are specified
by the torch reference, tao_engine/ops/policy_loss.py; this file follows it formula by formula.

`_sequence_kernel`: one program per sequence streams its T tokens in chunks of BLOCK_T (twice for GSPO's sequence
ratio: the first pass computes s_b). It writes the per-token loss l_t and the per-token gradient before aggregation
g_t = m_t (w_t dpg_t + kl_coef dkl_t), and the sequence's sums (loss, mask weight, clipped, ratio, KL, ratio max).
`_finalize_kernel`: one program adds the per-sequence sums in a fixed order (deterministic) into the loss and the
metrics, and writes each sequence's scale c_b (loss = sum_b c_b sum_t l_bt, e.g. 1 / sum(mask) for token_mean).
`_backward_kernel`: d loss / d logprobs_bt = grad_loss * c_b * g_bt, one elementwise pass.

Inputs are read in place through (row, column) strides: advantages [B] are read as [B, T] with a column stride of 0.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

KL_TYPE_IDS = {"k1": 1, "k2": 2, "k3": 3}
AGG_IDS = {"token_mean": 0, "seq_mean_token_mean": 1, "seq_mean_token_sum": 2, "seq_mean_token_sum_norm": 3}
NUM_SUMS = 6  # per sequence: loss, tokens (mask weight), clipped, ratio, kl, ratio_max
MAX_BLOCK_T = 1024


@triton.jit
def _sequence_kernel(
    lp_ptr, old_ptr, adv_ptr, mask_ptr, ref_ptr, w_ptr, per_token_ptr, grad_ptr, sums_ptr,
    lp_s0, lp_s1, old_s0, old_s1, adv_s0, adv_s1, mask_s0, mask_s1, ref_s0, ref_s1, w_s0, w_s1,
    T, clip_lower, clip_upper, dual_clip, kl_coef,
    SEQ_RATIO: tl.constexpr, HAS_DUAL: tl.constexpr, HAS_REF: tl.constexpr, KL_TYPE: tl.constexpr,
    HAS_W: tl.constexpr, COMPUTE_GRAD: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    seq_log_ratio = 0.0
    if SEQ_RATIO:  # GSPO: s_b = exp(mask-weighted mean of delta)
        weighted = tl.zeros((BLOCK_T,), dtype=tl.float32)
        weight = tl.zeros((BLOCK_T,), dtype=tl.float32)
        for start in range(0, T, BLOCK_T):
            t = start + tl.arange(0, BLOCK_T)
            m = tl.load(mask_ptr + b * mask_s0 + t * mask_s1, mask=t < T, other=0).to(tl.float32)
            on = m != 0.0
            lp = tl.load(lp_ptr + b * lp_s0 + t * lp_s1, mask=on, other=0.0)
            old = tl.load(old_ptr + b * old_s0 + t * old_s1, mask=on, other=0.0)
            weighted += tl.where(on, m * (lp - old), 0.0)
            weight += m
        total_weight = tl.sum(weight, axis=0)
        seq_log_ratio = tl.sum(weighted, axis=0) / tl.where(total_weight > 0, total_weight, 1.0)  # 0 if empty
    acc_loss = tl.zeros((BLOCK_T,), dtype=tl.float32)
    acc_tokens = tl.zeros((BLOCK_T,), dtype=tl.float32)
    acc_clipped = tl.zeros((BLOCK_T,), dtype=tl.float32)
    acc_ratio = tl.zeros((BLOCK_T,), dtype=tl.float32)
    acc_kl = tl.zeros((BLOCK_T,), dtype=tl.float32)
    acc_max = tl.full((BLOCK_T,), float("-inf"), dtype=tl.float32)
    for start in range(0, T, BLOCK_T):
        t = start + tl.arange(0, BLOCK_T)
        m = tl.load(mask_ptr + b * mask_s0 + t * mask_s1, mask=t < T, other=0).to(tl.float32)
        on = m != 0.0  # padding is never read: it may hold anything, even NaN
        lp = tl.load(lp_ptr + b * lp_s0 + t * lp_s1, mask=on, other=0.0)
        adv = tl.load(adv_ptr + b * adv_s0 + t * adv_s1, mask=on, other=0.0)
        if SEQ_RATIO:
            ratio = tl.exp(tl.zeros((BLOCK_T,), dtype=tl.float32) + seq_log_ratio)
        else:
            old = tl.load(old_ptr + b * old_s0 + t * old_s1, mask=on, other=0.0)
            ratio = tl.exp(lp - old)
        unclipped = ratio * adv
        clipped = tl.minimum(tl.maximum(ratio, clip_lower), clip_upper) * adv
        pg = -tl.minimum(unclipped, clipped)
        was_clipped = clipped < unclipped
        # d pg / d logprobs (d r / d logprobs = r): torch.minimum's rule, a tie splits the gradient between branches,
        # and the clipped branch passes it only where the clamp is inactive.
        unclipped_share = tl.where(unclipped < clipped, 1.0, tl.where(unclipped == clipped, 0.5, 0.0))
        in_range = (ratio >= clip_lower) & (ratio <= clip_upper)
        dpg = -adv * ratio * (unclipped_share + tl.where(in_range, 1.0 - unclipped_share, 0.0))
        if HAS_DUAL:
            cap = -dual_clip * adv
            capped = (adv < 0.0) & (pg > cap)
            pg = tl.where(capped, cap, pg)
            dpg = tl.where(capped, 0.0, dpg)
            was_clipped = was_clipped | capped
        if HAS_W:
            w = tl.load(w_ptr + b * w_s0 + t * w_s1, mask=on, other=0.0)
            pg = pg * w
            dpg = dpg * w
        kl = tl.zeros((BLOCK_T,), dtype=tl.float32)
        dkl = tl.zeros((BLOCK_T,), dtype=tl.float32)
        if HAS_REF:  # x = ref - logprobs
            x = tl.load(ref_ptr + b * ref_s0 + t * ref_s1, mask=on, other=0.0) - lp
            if KL_TYPE == 1:
                kl = -x
                dkl = dkl + 1.0
            elif KL_TYPE == 2:
                kl = 0.5 * x * x
                dkl = -x
            else:
                e = tl.exp(x)
                kl = e - x - 1.0
                dkl = 1.0 - e
        loss_t = tl.where(on, m * (pg + kl_coef * kl), 0.0)
        tl.store(per_token_ptr + b * T + t, loss_t, mask=t < T)
        if COMPUTE_GRAD:
            tl.store(grad_ptr + b * T + t, tl.where(on, m * (dpg + kl_coef * dkl), 0.0), mask=t < T)
        acc_loss += loss_t
        acc_tokens += m
        acc_clipped += tl.where(on & was_clipped, m, 0.0)
        acc_ratio += tl.where(on, m * ratio, 0.0)
        acc_kl += tl.where(on, m * kl, 0.0)
        acc_max = tl.maximum(acc_max, tl.where(on, ratio, float("-inf")))
    out = sums_ptr + b * 6  # NUM_SUMS
    tl.store(out + 0, tl.sum(acc_loss, axis=0))
    tl.store(out + 1, tl.sum(acc_tokens, axis=0))
    tl.store(out + 2, tl.sum(acc_clipped, axis=0))
    tl.store(out + 3, tl.sum(acc_ratio, axis=0))
    tl.store(out + 4, tl.sum(acc_kl, axis=0))
    tl.store(out + 5, tl.max(acc_max, axis=0))


@triton.jit
def _finalize_kernel(sums_ptr, loss_ptr, stats_ptr, scale_ptr, B, max_tokens, AGG: tl.constexpr, BLOCK_B: tl.constexpr):
    loss_sum = tl.zeros((BLOCK_B,), dtype=tl.float32)  # sum_b sum_t l_bt
    loss_per_token = tl.zeros((BLOCK_B,), dtype=tl.float32)  # sum_b (sum_t l_bt) / M_b
    tokens = tl.zeros((BLOCK_B,), dtype=tl.float32)
    sequences = tl.zeros((BLOCK_B,), dtype=tl.float32)
    clipped = tl.zeros((BLOCK_B,), dtype=tl.float32)
    ratio = tl.zeros((BLOCK_B,), dtype=tl.float32)
    kl = tl.zeros((BLOCK_B,), dtype=tl.float32)
    ratio_max = tl.full((BLOCK_B,), float("-inf"), dtype=tl.float32)
    for start in range(0, B, BLOCK_B):
        rows = start + tl.arange(0, BLOCK_B)
        row_sums = sums_ptr + rows.to(tl.int64) * 6
        inside = rows < B
        seq_loss = tl.load(row_sums + 0, mask=inside, other=0.0)
        seq_tokens = tl.load(row_sums + 1, mask=inside, other=0.0)
        nonempty = seq_tokens > 0.0
        loss_sum += seq_loss
        loss_per_token += tl.where(nonempty, seq_loss / tl.where(nonempty, seq_tokens, 1.0), 0.0)
        tokens += seq_tokens
        sequences += tl.where(nonempty, 1.0, 0.0)
        clipped += tl.load(row_sums + 2, mask=inside, other=0.0)
        ratio += tl.load(row_sums + 3, mask=inside, other=0.0)
        kl += tl.load(row_sums + 4, mask=inside, other=0.0)
        ratio_max = tl.maximum(ratio_max, tl.where(nonempty, tl.load(row_sums + 5, mask=inside, other=0.0), -1e38))
    total = tl.sum(tokens, axis=0)
    count = tl.sum(sequences, axis=0)
    any_token = total > 0.0
    inv_total = tl.where(any_token, 1.0 / tl.where(any_token, total, 1.0), 0.0)
    inv_count = tl.where(count > 0.0, 1.0 / tl.maximum(count, 1.0), 0.0)
    if AGG == 0:
        loss = tl.sum(loss_sum, axis=0) * inv_total
    elif AGG == 1:
        loss = tl.sum(loss_per_token, axis=0) * inv_count
    elif AGG == 2:
        loss = tl.sum(loss_sum, axis=0) * inv_count
    else:
        loss = tl.sum(loss_sum, axis=0) / max_tokens * inv_count
    tl.store(loss_ptr, loss)
    tl.store(stats_ptr + 0, tl.sum(clipped, axis=0) * inv_total)
    tl.store(stats_ptr + 1, tl.sum(ratio, axis=0) * inv_total)
    tl.store(stats_ptr + 2, tl.where(any_token, tl.max(ratio_max, axis=0), 0.0))
    tl.store(stats_ptr + 3, tl.sum(kl, axis=0) * inv_total)
    for start in range(0, B, BLOCK_B):  # each sequence's gradient scale c_b
        rows = start + tl.arange(0, BLOCK_B)
        seq_tokens = tl.load(sums_ptr + rows.to(tl.int64) * 6 + 1, mask=rows < B, other=0.0)
        nonempty = seq_tokens > 0.0
        if AGG == 0:
            scale = tl.zeros((BLOCK_B,), dtype=tl.float32) + inv_total
        elif AGG == 1:
            scale = inv_count / tl.where(nonempty, seq_tokens, 1.0)
        elif AGG == 2:
            scale = tl.zeros((BLOCK_B,), dtype=tl.float32) + inv_count
        else:
            scale = tl.zeros((BLOCK_B,), dtype=tl.float32) + inv_count / max_tokens
        tl.store(scale_ptr + rows, tl.where(nonempty, scale, 0.0), mask=rows < B)


@triton.jit
def _backward_kernel(grad_loss_ptr, grad_ptr, scale_ptr, out_ptr, total, T, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < total
    g = tl.load(grad_ptr + offsets, mask=inside, other=0.0)
    scale = tl.load(scale_ptr + offsets // T, mask=inside, other=0.0)
    tl.store(out_ptr + offsets, tl.load(grad_loss_ptr) * scale * g, mask=inside)


def _rows(t: torch.Tensor | None, batch: int) -> tuple[Any, int, int]:
    """(tensor, row stride, column stride); [B] tensors read as [B, T] with a column stride of 0."""
    if t is None:
        return None, 0, 0
    if t.dim() == 1:
        return t, t.stride(0), 0
    return t, t.stride(0), t.stride(1)


def policy_loss_forward(
    logprobs: torch.Tensor, old: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
    ref: torch.Tensor | None, weights: torch.Tensor | None, opts: Any, compute_grad: bool,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """-> (loss [], per_token [B, T], stats [4], grad [B, T] unscaled or None, scale [B]). Arguments checked."""
    batch, time = logprobs.shape
    device = logprobs.device
    per_token = torch.empty((batch, time), dtype=torch.float32, device=device)
    grad = torch.empty((batch, time), dtype=torch.float32, device=device) if compute_grad else None
    sums = torch.empty((batch, NUM_SUMS), dtype=torch.float32, device=device)
    loss = torch.empty((), dtype=torch.float32, device=device)
    stats = torch.empty((4,), dtype=torch.float32, device=device)
    scale = torch.empty((batch,), dtype=torch.float32, device=device)
    if batch > 0:
        lp, old_r, adv_r, mask_r, ref_r, w_r = (_rows(t, batch) for t in (logprobs, old, adv, mask, ref, weights))
        block_t = min(triton.next_power_of_2(max(time, 1)), MAX_BLOCK_T)
        _sequence_kernel[(batch,)](
            logprobs, old, adv, mask, ref if ref is not None else logprobs,
            weights if weights is not None else logprobs, per_token, grad if grad is not None else per_token, sums,
            lp[1], lp[2], old_r[1], old_r[2], adv_r[1], adv_r[2], mask_r[1], mask_r[2], ref_r[1], ref_r[2],
            w_r[1], w_r[2], time, float(1.0 - opts.clip_low), float(1.0 + opts.clip_high),
            float(opts.dual_clip or 0.0), float(opts.kl_coef),
            SEQ_RATIO=opts.ratio_level == "sequence", HAS_DUAL=opts.dual_clip is not None, HAS_REF=ref is not None,
            KL_TYPE=KL_TYPE_IDS[opts.kl_type], HAS_W=weights is not None, COMPUTE_GRAD=compute_grad, BLOCK_T=block_t,
            num_warps=8 if block_t >= 1024 else 4,  # 6 accumulators of BLOCK_T: 4 warps at 1024 spilled (sm_90, GSPO)
        )  # fmt: skip
    _finalize_kernel[(1,)](
        sums, loss, stats, scale, batch, float(opts.max_tokens or 1),
        AGG=AGG_IDS[opts.loss_agg], BLOCK_B=min(triton.next_power_of_2(max(batch, 1)), 1024),
    )  # fmt: skip
    return loss, per_token, stats, grad, scale


class PolicyLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logprobs, old, adv, mask, ref, weights, opts, compute_grad):  # type: ignore[override]
        loss, per_token, stats, grad, scale = policy_loss_forward(
            logprobs, old, adv, mask, ref, weights, opts, compute_grad
        )
        ctx.mark_non_differentiable(per_token, stats)
        ctx.save_for_backward(grad, scale)
        return loss, per_token, stats

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_per_token, _grad_stats):  # type: ignore[override]
        grad, scale = ctx.saved_tensors
        if grad is None or not ctx.needs_input_grad[0]:
            return (None,) * 8
        batch, time = grad.shape
        out = torch.empty_like(grad)
        block = 1024
        if grad.numel() > 0:
            _backward_kernel[(triton.cdiv(grad.numel(), block),)](
                grad_loss.float().contiguous(), grad, scale, out, grad.numel(), time, BLOCK=block
            )
        return (out,) + (None,) * 7


def policy_loss(
    logprobs: torch.Tensor, old: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
    ref: torch.Tensor | None, weights: torch.Tensor | None, opts: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(loss [], per_token_loss [B, T], stats [4]); loss differentiable in logprobs. Checked by tao_engine.ops."""
    compute_grad = torch.is_grad_enabled() and logprobs.requires_grad
    return PolicyLossFunction.apply(logprobs, old, adv, mask, ref, weights, opts, compute_grad)
