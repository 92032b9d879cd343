"""Group-relative advantages of RL on prompts with n sampled candidates each.

rewards [P, n] float (P prompts, n candidates; NaN = no reward for that candidate) ->
(advantages [P, n] fp32, zero_variance [P] bool). Inference only: the result carries no autograd history.

For group p let V be its valid (non-NaN) rewards, k = |V|, mean = sum(V) / k. Modes:
- "mean": A_i = r_i - mean (Dr.GRPO, no std division).
- "mean_std": A_i = (r_i - mean) / (std + eps), std the unbiased sample std sqrt(sum (r - mean)^2 / (k - 1)) of V
  (GRPO, as TRL computes it).
- "leave_one_out": A_i = r_i - mean of the other valid rewards = k / (k - 1) * (r_i - mean) (RLOO).
- "mean_batch_std": A_i = (r_i - mean) / (batch_std + eps), batch_std the unbiased std of the centered values
  r - mean over every valid entry of the batch, zero-variance groups included with their value 0. The centered values
  have mean 0 by construction, so batch_std = sqrt(sum c^2 / (N - 1)) with N the batch's valid count
  (REINFORCE++-baseline).
- "none": A_i = r_i, the raw rewards (REINFORCE without a baseline).

NaN entries are left out of every statistic and get advantage 0. zero_variance[p] is true when the group has fewer
than 2 valid rewards or all of them are equal (exactly, after conversion to fp32); in every centered mode its
advantages are exactly 0 (no learning signal: filtering such groups is DAPO's dynamic sampling). Mode "none" has no
baseline, so it still returns the raw rewards of such groups (with n = 1 every group is zero-variance, and zeroing
would silently stop plain REINFORCE from learning); the flag is reported all the same.

Statistics are computed in fp32 with a two-pass (mean, then centered sums) scheme. Backends: `cpp`
(csrc/cpu/advantages.cpp) and `triton` (kernels/advantages.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tao_engine.ops.registry import define_op

ADVANTAGE_MODES = ("mean", "mean_std", "leave_one_out", "mean_batch_std", "none")


def check_group_advantages_args(rewards: torch.Tensor, mode: str, eps: float) -> None:
    """Shared by every backend, so bad input fails the same way whichever one runs."""
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2:
        shape = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__
        raise ValueError(f"group_advantages: rewards must be a 2-D [P, n] tensor (P prompts x n samples), got {shape}")
    if not rewards.dtype.is_floating_point:
        raise ValueError(
            f"group_advantages: rewards must be a floating-point tensor (NaN marks a missing reward), got "
            f"{rewards.dtype}; convert with rewards.float()"
        )
    if mode not in ADVANTAGE_MODES:
        raise ValueError(f"group_advantages: mode must be one of {ADVANTAGE_MODES}, got {mode!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"group_advantages: eps must be a finite number >= 0, got {eps!r}")


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    # A denominator that is 1 where x is 0: used where the numerator is then 0 too.
    return torch.where(x > 0, x, torch.ones_like(x))


def group_advantages_reference(
    rewards: torch.Tensor, mode: str = "mean_std", eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    check_group_advantages_args(rewards, mode, eps)
    r = rewards.detach().float()  # [P, n]
    valid = ~torch.isnan(r)  # [P, n]
    count = valid.sum(-1)  # [P] valid rewards per group
    raw = r.masked_fill(~valid, 0.0)  # [P, n]
    mean = raw.sum(-1) / _nonzero(count)  # [P]
    highest = r.masked_fill(~valid, -math.inf).amax(-1)  # [P]
    lowest = r.masked_fill(~valid, math.inf).amin(-1)  # [P]
    zero_variance = (count < 2) | (highest == lowest)  # [P]
    live = valid & ~zero_variance[:, None]  # entries that carry a learning signal
    centered = torch.where(live, r - mean[:, None], 0.0)  # [P, n]

    if mode == "none":
        advantages = raw
    elif mode == "mean":
        advantages = centered
    elif mode == "mean_std":
        std = (centered.square().sum(-1) / _nonzero(count - 1)).sqrt()  # [P] unbiased
        advantages = centered / (std + eps)[:, None]
    elif mode == "leave_one_out":
        advantages = centered * (count / _nonzero(count - 1))[:, None]
    else:  # mean_batch_std
        batch_count = valid.sum()
        batch_std = (centered.square().sum() / _nonzero(batch_count - 1)).sqrt()  # [] unbiased, mean of c is 0
        advantages = centered / (batch_std + eps)
    return advantages.contiguous(), zero_variance


group_advantages = define_op("group_advantages", group_advantages_reference)


# --- triton backend (kernels/advantages.py), imported on first call, never at import time.
from tao_engine.ops import triton_support  # noqa: E402

# One group's candidates are one block row of the kernel; more candidates than this per prompt is not a GRPO group.
TRITON_MAX_GROUP = 8192


def _group_advantages_triton(a: Any) -> tuple[torch.Tensor, torch.Tensor]:
    check_group_advantages_args(*a)
    return triton_support.kernel_module("advantages").group_advantages(a.rewards.detach(), a.mode, float(a.eps))


def _group_advantages_triton_supports(a: Any) -> tuple[bool, str]:
    ok, why = triton_support.device_supported(a.rewards)
    if not ok:
        return ok, why
    if a.rewards.dim() == 2 and a.rewards.shape[1] > TRITON_MAX_GROUP:
        return False, f"groups of more than {TRITON_MAX_GROUP} candidates (got n = {a.rewards.shape[1]})"
    return True, ""


group_advantages.register(
    "triton", _group_advantages_triton, triton_support.triton_probe, _group_advantages_triton_supports
)


# --- cpp and cuda backends (csrc/cpu/advantages.cpp, csrc/cuda/advantages*.{cu,cpp}: one block per group):
# torch.ops.tao_engine.group_advantages with a fake kernel (below); the extension loads in the probes.
from tao_engine.ops.extension import cpu_backend_probe, cuda_backend_probe  # noqa: E402


def _group_advantages_compiled(a: Any) -> tuple[torch.Tensor, torch.Tensor]:
    check_group_advantages_args(*a)
    rewards = a.rewards
    # The kernel reads fp32 or fp64 rewards; other float dtypes are widened (a no-op for those two).
    if rewards.dtype not in (torch.float32, torch.float64):
        rewards = rewards.float()
    advantages, zero_variance = torch.ops.tao_engine.group_advantages(rewards.detach(), a.mode, float(a.eps))
    return advantages, zero_variance


def _on(device_type: str, a: Any) -> tuple[bool, str]:
    if a.rewards.device.type != device_type:
        return False, f"rewards must be a {device_type.upper()} tensor, got {a.rewards.device}"
    return True, ""


group_advantages.register("cpp", _group_advantages_compiled, cpu_backend_probe, lambda a: _on("cpu", a))
group_advantages.register("cuda", _group_advantages_compiled, cuda_backend_probe, lambda a: _on("cuda", a))


# Inference only: a fake kernel, no autograd formula. Applied when `_C` loads (ops/extension.py).
def _group_advantages_fake(rewards: torch.Tensor, mode: str, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    torch._check(rewards.dim() == 2, lambda: f"group_advantages: rewards must be [P, n], got {tuple(rewards.shape)}")
    advantages = rewards.new_empty(rewards.shape, dtype=torch.float32)  # [P, n]
    return advantages, rewards.new_empty((rewards.shape[0],), dtype=torch.bool)  # [P]


group_advantages.register_compiled("tao_engine::group_advantages", _group_advantages_fake)
