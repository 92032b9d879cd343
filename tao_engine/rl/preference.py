"""Losses that use each group's ranking rather than its advantages: best-of-N SFT and DPO on best vs worst."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def best_and_worst(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards [G, n] (NaN = none) -> (best [G], worst [G]) sample indices; ties go to the lowest index."""
    nan = torch.isnan(rewards)
    high = rewards.masked_fill(nan, float("-inf"))
    low = rewards.masked_fill(nan, float("inf"))
    # argmax/argmin return the first extreme on ties (documented for CPU and CUDA).
    return high.argmax(dim=1), low.argmin(dim=1)


def _rows(picks: torch.Tensor, n: int) -> torch.Tensor:
    return torch.arange(picks.numel(), device=picks.device) * n + picks.to(torch.long)


def sft_nll(logprobs: torch.Tensor, mask: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """Mean over groups of the token-mean negative log-likelihood of each group's best completion.
    logprobs, mask [G * n, T] group-major; best [G]."""
    n = logprobs.shape[0] // best.numel()
    rows = _rows(best, n)
    lp, m = logprobs[rows], mask[rows].to(logprobs.dtype)  # [G, T]
    per_group = -(lp * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
    return per_group.mean()


def dpo_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DPO (Rafailov et al. 2023) on (chosen, rejected) = (best, worst) of each group:
    -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))), sequence log-probs summed over tokens,
    averaged over groups. logprobs, ref_logprobs, mask [G * n, T] group-major; chosen, rejected [G]."""
    if ref_logprobs is None:
        raise ValueError("dpo_loss: DPO needs reference log-probs (pass a reference policy to train_step)")
    n = logprobs.shape[0] // chosen.numel()
    m = mask.to(logprobs.dtype)
    seq = (logprobs * m).sum(dim=1)  # [G * n]
    ref_seq = (ref_logprobs * m).sum(dim=1)
    c, r = _rows(chosen, n), _rows(rejected, n)
    margin = (seq[c] - ref_seq[c]) - (seq[r] - ref_seq[r])
    return -F.logsigmoid(beta * margin).mean()
