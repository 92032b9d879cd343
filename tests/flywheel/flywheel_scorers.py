"""Scorers for the flywheel tests, importable as `tests.flywheel.flywheel_scorers:<Name>` from a TAO config."""

from __future__ import annotations

TARGET = 7


class TargetTokenScorer:
    """Fraction of TARGET token ids in each completion (cheap, needs no labels); records the prompts it saw."""

    name = "target_token"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.prompts_seen: list[str] = []

    def score_groups(self, prompts, groups, completion_token_ids=None, **context):
        if self.fail:
            raise RuntimeError("scorer failed on purpose")
        self.prompts_seen.extend(str(p) for p in prompts)
        return [[sum(t == TARGET for t in c) / max(1, len(c)) for c in group] for group in completion_token_ids]


def composite(scorer: TargetTokenScorer):
    """What TAO takes as `scorer=` (the CLI builds the same from a [[scoring.scorers]] spec)."""
    from tao_engine.scoring.composite import CompositeScorer, WeightedScorer

    return CompositeScorer([WeightedScorer(scorer)])
