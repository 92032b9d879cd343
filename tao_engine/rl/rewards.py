"""Rewards and sampler log-probs of a batch of rollouts as tensors, and the per-token KL estimators."""

from __future__ import annotations

import math
from typing import Any

import torch


def rewards_tensor(rollouts: Any) -> torch.Tensor:
    """rollouts.rewards [P][n] (float or None) -> [P, n] fp32 with NaN for None."""
    rewards = getattr(rollouts, "rewards", None)
    if rewards is None:
        raise ValueError("train_step: the rollouts carry no rewards; score them first (tao_engine.rl.score)")
    widths = {len(row) for row in rewards}
    if len(widths) > 1:
        raise ValueError(f"train_step: every prompt needs the same number of scored samples, got {sorted(widths)}")
    if len(rewards) != len(rollouts.completion_token_ids):
        raise ValueError(
            f"train_step: {len(rewards)} reward rows for {len(rollouts.completion_token_ids)} prompts; score the "
            "rollouts after any filtering"
        )
    values = [[math.nan if r is None else float(r) for r in row] for row in rewards]
    return torch.tensor(values, dtype=torch.float32).reshape(len(rewards), widths.pop() if widths else 0)


def advantage_scale_tensor(rollouts: Any) -> torch.Tensor | None:
    """rollouts.advantage_scale [P][n] (set by the guards) -> [P, n] fp32, or None when unset."""
    scale = getattr(rollouts, "advantage_scale", None)
    if scale is None:
        return None
    shape = [len(row) for row in rollouts.completion_token_ids]
    if [len(row) for row in scale] != shape:
        raise ValueError(f"train_step: advantage_scale has rows of {[len(r) for r in scale]} for completions {shape}")
    values = [[float(v) for v in row] for row in scale]
    if any(not math.isfinite(v) or v < 0 for row in values for v in row):
        raise ValueError("train_step: advantage_scale must hold finite numbers >= 0")
    return torch.tensor(values, dtype=torch.float32).reshape(len(values), shape[0] if shape else 0)


def comparable_sampler_logprobs(rollouts: Any, temperature: float) -> torch.Tensor | None:
    """The sampler's log-probs [B, T] (rows group by group, 0 at padding) when they are log-probs of the very
    distribution the trainer computes at `temperature`; None when the sampler drew from something else."""
    sampling = rollouts.sampling
    unfiltered = (
        sampling.top_k in (0, -1)
        and sampling.top_p >= 1.0
        and sampling.min_p <= 0.0
        and sampling.repetition_penalty == 1.0
        and sampling.presence_penalty == 0.0
        and sampling.frequency_penalty == 0.0
    )
    if temperature == 1.0:
        return rollouts.padded_raw_logprobs()  # the raw model at temperature 1, whatever the sampler filtered
    if unfiltered and sampling.temperature == temperature:
        return rollouts.padded_sampler_logprobs()
    return None


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kl_type: str) -> torch.Tensor:
    """Schulman's estimators of KL(policy || reference) per sampled token; x = ref - policy log-prob."""
    x = ref_logprobs - logprobs
    if kl_type == "k1":
        return -x
    if kl_type == "k2":
        return 0.5 * x * x
    if kl_type == "k3":
        return torch.expm1(x) - x
    raise ValueError(f"kl_type must be 'k1', 'k2' or 'k3', got {kl_type!r}")
