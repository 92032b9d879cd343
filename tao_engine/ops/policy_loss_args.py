"""Options and argument checks of `policy_loss` (ops/policy_loss.py), shared by every backend so that bad input fails
with the same message whichever one runs. Each message names the field and what it accepts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

RATIO_LEVELS = ("token", "sequence")
KL_TYPES = ("k1", "k2", "k3")
LOSS_AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")


@dataclass(frozen=True)
class PolicyLossOptions:
    """The scalar options of one policy_loss call, validated on construction."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    ratio_level: str = "token"
    kl_type: str = "k3"
    kl_coef: float = 0.0
    loss_agg: str = "token_mean"
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("clip_low", "clip_high", "kl_coef"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"policy_loss: {name} must be a finite number >= 0, got {value!r}")
        if self.dual_clip is not None and not (
            isinstance(self.dual_clip, (int, float)) and math.isfinite(self.dual_clip) and self.dual_clip > 1
        ):
            raise ValueError(f"policy_loss: dual_clip must be None or a finite number > 1, got {self.dual_clip!r}")
        for name, allowed in (("ratio_level", RATIO_LEVELS), ("kl_type", KL_TYPES), ("loss_agg", LOSS_AGGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"policy_loss: {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.max_tokens is not None and (
            isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens <= 0
        ):
            raise ValueError(f"policy_loss: max_tokens must be None or an int > 0, got {self.max_tokens!r}")
        if self.loss_agg == "seq_mean_token_sum_norm" and self.max_tokens is None:
            raise ValueError(
                "policy_loss: loss_agg='seq_mean_token_sum_norm' divides each sequence's sum by a constant: pass "
                "max_tokens (e.g. the generation budget max_new_tokens)"
            )


def _check_tensor(name: str, t: object, shape: tuple[int, ...], device: torch.device, want: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"policy_loss: {name} must be a tensor of shape {want}, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(f"policy_loss: {name} must have shape {want} = {shape}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"policy_loss: {name} is on {t.device} but logprobs on {device}; move it with .to()")
    if not (t.dtype.is_floating_point or (name == "mask" and t.dtype == torch.bool)):
        kinds = "bool or floating-point" if name == "mask" else "floating-point"
        raise ValueError(f"policy_loss: {name} must be a {kinds} tensor, got {t.dtype}")


def policy_loss_options(
    tensors: Sequence[torch.Tensor | None], options: Sequence[object]
) -> PolicyLossOptions:
    """Checks policy_loss's tensors (shapes, devices, dtypes) and returns its validated options. `tensors` and `options`
    are the two parts of its signature in order: logprobs .. token_weights, then clip_low .. max_tokens."""
    logprobs, old_logprobs, advantages, mask, ref_logprobs, token_weights = tensors
    if not isinstance(logprobs, torch.Tensor) or logprobs.dim() != 2:
        got = tuple(logprobs.shape) if isinstance(logprobs, torch.Tensor) else type(logprobs).__name__
        raise ValueError(f"policy_loss: logprobs must be a 2-D [B, T] tensor, got {got}")
    if not logprobs.dtype.is_floating_point:
        raise ValueError(f"policy_loss: logprobs must be a floating-point tensor (float32), got {logprobs.dtype}")
    shape, device = tuple(logprobs.shape), logprobs.device
    _check_tensor("old_logprobs", old_logprobs, shape, device, "[B, T]")
    _check_tensor("mask", mask, shape, device, "[B, T]")
    if isinstance(advantages, torch.Tensor) and advantages.dim() == 1:
        _check_tensor("advantages", advantages, shape[:1], device, "[B]")
    else:
        _check_tensor("advantages", advantages, shape, device, "[B] or [B, T]")
    if ref_logprobs is not None:
        _check_tensor("ref_logprobs", ref_logprobs, shape, device, "[B, T]")
    if token_weights is not None:
        _check_tensor("token_weights", token_weights, shape, device, "[B, T]")
    opts = PolicyLossOptions(*options)
    if opts.kl_coef > 0 and ref_logprobs is None:
        raise ValueError(
            f"policy_loss: kl_coef = {opts.kl_coef} adds a KL penalty to a reference policy, but ref_logprobs is "
            "None; pass ref_logprobs [B, T] or set kl_coef=0"
        )
    return opts
