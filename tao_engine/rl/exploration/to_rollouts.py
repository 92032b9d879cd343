"""Explored candidates -> a `Rollouts` under the INFERENCE-TIME prompt, ready for `score` and `train_step`.

The update always trains the inference-time prompt to emit the transformed response, whatever way the candidate was
found. Per candidate: completion token ids = the tokenized transformed response + EOS (a plain candidate keeps its
sampled ids, EOS included); a failed candidate (response None) gets an empty completion, which trains no token.

Off-policy choice. The candidates were not sampled from pi(. | inference prompt): they came from another prompt
(a reasoning template, a revise prompt) and were then cut by a transform. Their true importance weight
pi(y | x_inference) / q(y) has no usable q (the transform discards the reasoning), and pi(y | x_inference) /
pi(y | x_exploration) is a product over tokens of ratios that span orders of magnitude, so we do not use it. Instead
the "old" log-probs are the policy's own log-probs of y under the inference-time prompt, computed here at collection
time with no grad (temperature 1, the trainer's `PolicyForward`). The policy-gradient losses then use the ratio
pi_theta(y | x_inf) / pi_collect(y | x_inf), clipped by the algorithm's [1 - clip_low, 1 + clip_high]: it is 1 on
the first pass and keeps later epochs and minibatches (PPO) near the collection-time policy. The effect: the update is
an advantage-weighted likelihood step toward the better responses (as best-of-N SFT is, weighted by their group
advantage), not an unbiased gradient of the inference-time policy's expected reward. Best-of-N SFT and DPO need no
ratio and take the (inference prompt, response) pairs as they are.

These log-probs fill both `sampler_logprobs` and `raw_logprobs` and the Rollouts' sampling says temperature 1 with no
filtering, so `old_logprobs = "sampler"` and `"trainer"` (which recomputes them with the same weights) agree, and
`tis_cap` weights are 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tao_engine.engine.prompts import PromptLike, encode_prompt
from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.rl.exploration.candidate import Candidate
from tao_engine.rl.policy_forward import PolicyForward
from tao_engine.rl.rollouts import Rollouts, RolloutTiming


def response_token_ids(candidate: Candidate, tokenizer: Any, eos_id: int) -> list[int]:
    """The completion the inference-time prompt is trained to emit: [] for a failed candidate."""
    if candidate.response is None:
        return []
    if candidate.response_token_ids is not None:
        return list(candidate.response_token_ids)
    if tokenizer is None:
        raise ValueError("candidates_to_rollouts: a transformed response needs a tokenizer to become token ids")
    return tokenizer.encode(candidate.response, add_special_tokens=False) + [eos_id]


def candidates_to_rollouts(
    model: nn.Module,
    tokenizer: Any,
    eos_id: int,
    prompts: Sequence[PromptLike],
    candidates: Sequence[Sequence[Candidate]],
    sampling: SamplingParams,
    seconds: float = 0.0,
    max_tokens_per_forward: int | None = 8192,
    bf16_autocast: bool = True,
) -> Rollouts:
    """prompts [P] inference-time prompts; candidates [P][n] (n equal for all prompts). `sampling` is the run's; the
    Rollouts records it at temperature 1 unfiltered (the distribution its log-probs are of) with n = candidates."""
    widths = {len(group) for group in candidates}
    if not prompts or len(prompts) != len(candidates) or len(widths) > 1 or 0 in widths:
        raise ValueError(
            f"candidates_to_rollouts: need one non-empty group of equal size per prompt, got {len(prompts)} prompts "
            f"and group sizes {sorted(widths)}"
        )
    encoded = [encode_prompt(p, tokenizer, index=i) for i, p in enumerate(prompts)]
    prompt_ids = [ids for _, ids in encoded]
    completion_ids = [[response_token_ids(c, tokenizer, eos_id) for c in group] for group in candidates]
    logprobs = collection_logprobs(model, prompt_ids, completion_ids, max_tokens_per_forward, bf16_autocast)
    n = widths.pop()
    unfiltered = dataclasses.replace(
        sampling, n=n, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
        presence_penalty=0.0, frequency_penalty=0.0, logprobs=True,
    )
    return Rollouts(
        prompts=list(prompts),
        prompt_texts=[text for text, _ in encoded],
        prompt_token_ids=prompt_ids,
        completion_token_ids=completion_ids,
        completion_texts=[[c.response or "" for c in group] for group in candidates],
        sampler_logprobs=logprobs,
        raw_logprobs=[[list(row) for row in group] for group in logprobs],
        finish_reasons=[[c.finish_reason for c in group] for group in candidates],
        sampling=unfiltered,
        timing=RolloutTiming(
            seconds=seconds,
            num_prompt_tokens=sum(len(ids) for ids in prompt_ids),
            num_completion_tokens=sum(c.tokens for group in candidates for c in group),  # what exploring cost
        ),
        prompt_indices=list(range(len(prompts))),
    )


@torch.no_grad()
def collection_logprobs(
    model: nn.Module,
    prompt_ids: list[list[int]],
    completion_ids: list[list[list[int]]],
    max_tokens_per_forward: int | None = 8192,
    bf16_autocast: bool = True,
) -> list[list[list[float]]]:
    """[P][n][T_k] log p(token) of each completion under the current policy at temperature 1 (no grad)."""
    # The trainer's forward (autocast included), so that old and new log-probs are computed alike.
    forward = PolicyForward(temperature=1.0, shared_prompt=True, bf16_autocast=bf16_autocast)
    out = forward.logprobs(model, prompt_ids, completion_ids, max_tokens_per_forward=max_tokens_per_forward)
    rows = out.logprobs.float().cpu().tolist()  # [P*n][T], 0 at padding: one conversion for the whole batch
    flat = iter(row[:n] for row, n in zip(rows, out.lengths.tolist(), strict=True))
    return [[next(flat) for _ in group] for group in completion_ids]
