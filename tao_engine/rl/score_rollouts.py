"""`score(rollouts, scorer)`: every candidate of a rollout batch gets its reward (label-free), kept on the rollouts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tao_engine.rl.rollouts import Rollouts


def score(
    rollouts: Rollouts,
    scorer: Any,
    contexts: Mapping[str, Sequence[Any]] | None = None,
) -> Rollouts:
    """Rollouts with `rewards` [P][n] (None where no scorer applied) and `reward_metrics` set.

    scorer: a `tao_engine.scoring.CompositeScorer` (or anything with its `score_groups(prompts, groups, **context)
    -> ScoreReport`). contexts: per-prompt values by name, aligned with the prompts given to `rollout` (e.g. a
    `db_path` per prompt for the SQL verifier); rows of skipped prompts are dropped here too.
    """
    if not callable(getattr(scorer, "score_groups", None)):
        raise TypeError(
            f"score: scorer must have score_groups(prompts, groups, **context) (a CompositeScorer, e.g. from "
            f"tao_engine.scoring.build_composite), got {type(scorer).__name__}"
        )
    kept = rollouts.prompt_indices or list(range(rollouts.num_prompts))
    context: dict[str, list[Any]] = {}
    for key, values in (contexts or {}).items():
        values = list(values)
        if len(values) <= max(kept, default=-1):
            raise ValueError(
                f"score: contexts[{key!r}] has {len(values)} values but the rollout had prompt index {max(kept)}; "
                "give one value per prompt passed to rollout()"
            )
        context[key] = [values[i] for i in kept]
    # What the rollout itself knows, for the scorers that use it: the raw chat (judges and reward models render it
    # with their own template instead of reading the policy's rendered prompt), and ids and log-probs
    # (self-certainty). A caller's context of the same name wins.
    generated = {
        "prompt_messages": [p if isinstance(p, (list, tuple)) and p and isinstance(p[0], Mapping) else None
                            for p in rollouts.prompts],
        "prompt_token_ids": rollouts.prompt_token_ids,
        "completion_token_ids": rollouts.completion_token_ids,
        "logprobs": rollouts.raw_logprobs,
    }
    context = {**generated, **context}
    prompts = [text if text is not None else "" for text in rollouts.prompt_texts]
    report = scorer.score_groups(prompts, rollouts.completion_texts, **context)
    if len(report.scores) != rollouts.num_prompts:
        raise RuntimeError(f"score: the scorer returned {len(report.scores)} groups for {rollouts.num_prompts} prompts")
    per_scorer = getattr(report, "per_scorer", None) or {}
    scorer_rewards = [{name: list(scores[g]) for name, scores in per_scorer.items()}
                      for g in range(rollouts.num_prompts)]  # [P] {label: [n]}
    return dataclasses.replace(rollouts, rewards=report.scores, reward_metrics=dict(report.metrics),
                               scorer_rewards=scorer_rewards, answers=getattr(report, "answers", None),
                               advantage_scale=None)
