"""Format warm-up: for the first `warmup_steps` steps the update is best-of-N SFT on the candidates that pass every
rule scorer, before any vote or judge reward is trusted. A model that cannot yet produce the requested format gives
votes and judges nothing to compare (all-None or all-equal groups); a few steps of imitating its own well-formed
samples fix the format first (the published label-free methods report the same).

Rule scorers are the pointwise, model-free ones (regex, tag_format, length, json_schema, sql, python_exec, your own
functions); group scorers (votes, agreement) and model-based ones (reward model, judges, self-certainty) are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tao_engine.scoring.base import is_group_scorer

MODEL_BASED = frozenset({"reward_model", "self_certainty", "judge_pointwise", "judge_pairwise", "judge_group"})

ScorerRewards = Sequence[Mapping[str, Sequence[float | None]]]  # [P] {scorer label: [n]}


def rule_scorer_labels(composite: Any) -> list[str]:
    """The labels of a CompositeScorer's rule scorers (see the module docstring)."""
    return [e.name for e in getattr(composite, "entries", ())
            if not is_group_scorer(e.scorer) and getattr(e.scorer, "name", "") not in MODEL_BASED]


def warmup_rewards(scorer_rewards: ScorerRewards, rules: Sequence[str], threshold: float) -> list[list[float | None]]:
    """[P][n]: 1.0 for a candidate that every rule scorer passes (score >= threshold; a None score, "not
    applicable", neither passes nor fails), None otherwise (not imitated)."""
    if not rules:
        raise ValueError("[guards] warmup_steps needs at least one rule scorer (regex, json_schema, sql, ...) in "
                         "[scoring]; votes, judges and reward models cannot tell a well-formed answer")
    out: list[list[float | None]] = []
    for per_scorer in scorer_rewards:
        missing = [r for r in rules if r not in per_scorer]
        if missing:
            raise ValueError(f"warmup_rewards: no scores of rule scorer(s) {missing} in the batch")
        n = len(per_scorer[rules[0]])
        row: list[float | None] = []
        for j in range(n):
            scores = [per_scorer[r][j] for r in rules]
            passed = all(s is None or s >= threshold for s in scores) and any(s is not None for s in scores)
            row.append(1.0 if passed else None)
        out.append(row)
    return out
