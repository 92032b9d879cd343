"""Why TAO does (or does not) learn, measured per step against the hidden gold, which the bench holds and the
scorers never see:

- pass_rate: the share of sampled candidates that are correct (the training questions' accuracy under sampling);
- reward_pair_acc: over candidate pairs of one group where one is correct and the other not, how often the
  label-free reward ranks the correct one higher (ties count 1/2; 0.5 = the reward carries no signal);
- reward_top_correct: the share of groups whose highest-rewarded candidate is correct (compare with pass_rate:
  what picking by the reward gains over picking at random);
- entropy: mean -log p (the temperature-1 model) of the tokens sampled at the profile's temperature: the per-token
  entropy when sampling at 1, a cross-entropy proxy of it below 1; a collapse shows as this falling towards 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.quality.records import Example
from bench.quality.tasks import Task


def reward_diagnostics(task: Task, batch: Any, examples: Sequence[Example]) -> dict[str, float]:
    kept = batch.prompt_indices or list(range(batch.num_prompts))
    correct = [[task.is_correct(text, examples[i].gold, examples[i].record.context) for text in texts]
               for i, texts in zip(kept, batch.completion_texts, strict=True)]
    rewards = [[-math.inf if r is None else r for r in group] for group in batch.rewards]
    wins, pairs, top_hits = 0.0, 0, 0
    for ok, rs in zip(correct, rewards, strict=True):
        top_hits += ok[max(range(len(rs)), key=rs.__getitem__)]
        for a in range(len(ok)):
            for b in range(len(ok)):
                if ok[a] and not ok[b]:
                    pairs += 1
                    wins += 1.0 if rs[a] > rs[b] else 0.5 if rs[a] == rs[b] else 0.0
    flat = [c for group in correct for c in group]
    logprobs = [lp for group in batch.raw_logprobs for sample in group for lp in sample]
    return {
        "pass_rate": sum(flat) / max(1, len(flat)),
        "reward_pair_acc": wins / pairs if pairs else math.nan,
        "reward_pairs": float(pairs),
        "reward_top_correct": top_hits / max(1, len(correct)),
        "entropy": -sum(logprobs) / len(logprobs) if logprobs else math.nan,
    }


def summarize(history: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Run means of the per-step diagnostics (reward_pair_acc weighted by its pairs), and the first and last
    steps' entropy."""
    def mean(key: str) -> float:
        values = [h[key] for h in history if isinstance(h.get(key), (int, float)) and math.isfinite(h[key])]
        return sum(values) / len(values) if values else math.nan

    pairs = sum(h.get("reward_pairs", 0.0) for h in history)
    weighted = sum(h["reward_pair_acc"] * h["reward_pairs"] for h in history if h.get("reward_pairs"))
    return {
        "pass_rate": mean("pass_rate"),
        "reward_pair_acc": weighted / pairs if pairs else math.nan,
        "reward_pairs": pairs,
        "reward_top_correct": mean("reward_top_correct"),
        "zero_variance_frac": mean("zero_variance_frac"),
        "entropy_first": history[0].get("entropy", math.nan) if history else math.nan,
        "entropy_last": history[-1].get("entropy", math.nan) if history else math.nan,
        "reward_mean": mean("reward_mean"),
        "judge_none_frac": mean("score/judge_pointwise/none_frac"),  # NaN without a judge
    }
