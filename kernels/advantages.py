"""Group-relative advantages in Triton: rewards [P, n] (NaN = no reward) -> (advantages [P, n] fp32, zero_variance [P]).

The modes and formulas are specified by the torch reference, tao_engine/ops/advantages.py.

`_group_kernel`: one program per BLOCK_P groups, each group one row of a [BLOCK_P, BLOCK_N] tile (n <= BLOCK_N). It
computes the valid count, the mean, the min and max (zero variance: < 2 valid or all equal) and the centered
rewards in registers, then writes the advantages of every per-group mode. For "mean_batch_std" it writes the centered
values and the block's sum of squares and valid count; `_batch_scale_kernel` then adds up those per-block partials (in
a fixed order, so the result is deterministic) and divides its block by batch_std + eps.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MODE_IDS = {"mean": 0, "mean_std": 1, "leave_one_out": 2, "mean_batch_std": 3, "none": 4}
TILE = 2048  # rewards per program: BLOCK_P * BLOCK_N


@triton.jit
def _group_kernel(
    rewards_ptr, adv_ptr, zero_var_ptr, part_sq_ptr, part_count_ptr,
    P, N, stride_p, stride_n, eps,
    MODE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    rows = pid * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P]
    cols = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    inside = (rows[:, None] < P) & (cols[None, :] < N)  # [BLOCK_P, BLOCK_N]
    offsets = rows[:, None].to(tl.int64) * stride_p + cols[None, :] * stride_n
    r = tl.load(rewards_ptr + offsets, mask=inside, other=float("nan")).to(tl.float32)
    valid = inside & (r == r)  # NaN != NaN
    count = tl.sum(valid.to(tl.int32), axis=1)  # [BLOCK_P]
    raw = tl.where(valid, r, 0.0)
    mean = tl.sum(raw, axis=1) / tl.maximum(count, 1).to(tl.float32)
    highest = tl.max(tl.where(valid, r, float("-inf")), axis=1)
    lowest = tl.min(tl.where(valid, r, float("inf")), axis=1)
    zero_var = (count < 2) | (highest == lowest)  # [BLOCK_P]
    live = valid & (zero_var == 0)[:, None]
    centered = tl.where(live, r - mean[:, None], 0.0)  # [BLOCK_P, BLOCK_N]
    if MODE == 0:  # mean
        adv = centered
    elif MODE == 1:  # mean_std: unbiased std of the group
        std = tl.sqrt(tl.sum(centered * centered, axis=1) / tl.maximum(count - 1, 1).to(tl.float32))
        adv = centered / (std + eps)[:, None]
    elif MODE == 2:  # leave_one_out: k / (k - 1) * (r - mean)
        adv = centered * (count.to(tl.float32) / tl.maximum(count - 1, 1).to(tl.float32))[:, None]
    elif MODE == 3:  # mean_batch_std: centered now, scaled by _batch_scale_kernel
        adv = centered
        tl.store(part_sq_ptr + pid, tl.sum(tl.sum(centered * centered, axis=1), axis=0))
        tl.store(part_count_ptr + pid, tl.sum(count, axis=0))
    else:  # none: raw rewards
        adv = raw
    out_offsets = rows[:, None].to(tl.int64) * N + cols[None, :]
    tl.store(adv_ptr + out_offsets, adv, mask=inside)
    tl.store(zero_var_ptr + rows, zero_var, mask=rows < P)


@triton.jit
def _batch_scale_kernel(
    adv_ptr, part_sq_ptr, part_count_ptr, num_parts, total, eps,
    BLOCK_PARTS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    sq = tl.zeros((BLOCK_PARTS,), dtype=tl.float32)
    count = tl.zeros((BLOCK_PARTS,), dtype=tl.int32)
    for start in range(0, num_parts, BLOCK_PARTS):
        idx = start + tl.arange(0, BLOCK_PARTS)
        sq += tl.load(part_sq_ptr + idx, mask=idx < num_parts, other=0.0)
        count += tl.load(part_count_ptr + idx, mask=idx < num_parts, other=0)
    valid = tl.sum(count, axis=0)
    batch_std = tl.sqrt(tl.sum(sq, axis=0) / tl.maximum(valid - 1, 1).to(tl.float32))
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    adv = tl.load(adv_ptr + offsets, mask=offsets < total, other=0.0)
    tl.store(adv_ptr + offsets, adv / (batch_std + eps), mask=offsets < total)


def group_advantages(rewards: torch.Tensor, mode: str, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Arguments are checked by the caller (tao_engine.ops.advantages). Reads rewards in place through strides."""
    groups, n = rewards.shape
    advantages = torch.empty((groups, n), dtype=torch.float32, device=rewards.device)
    zero_variance = torch.empty((groups,), dtype=torch.bool, device=rewards.device)
    if groups == 0:
        return advantages, zero_variance
    if n == 0:
        return advantages, zero_variance.fill_(True)
    block_n = triton.next_power_of_2(n)
    block_p = max(1, TILE // block_n)
    num_parts = triton.cdiv(groups, block_p)
    part_sq = torch.empty((num_parts,), dtype=torch.float32, device=rewards.device)
    part_count = torch.empty((num_parts,), dtype=torch.int32, device=rewards.device)
    _group_kernel[(num_parts,)](
        rewards, advantages, zero_variance, part_sq, part_count,
        groups, n, rewards.stride(0), rewards.stride(1), eps,
        MODE=MODE_IDS[mode], BLOCK_P=block_p, BLOCK_N=block_n,
    )  # fmt: skip
    if mode == "mean_batch_std":
        block = 1024
        _batch_scale_kernel[(triton.cdiv(groups * n, block),)](
            advantages, part_sq, part_count, num_parts, groups * n, eps,
            BLOCK_PARTS=min(triton.next_power_of_2(num_parts), 1024), BLOCK=block,
        )  # fmt: skip
    return advantages, zero_variance
