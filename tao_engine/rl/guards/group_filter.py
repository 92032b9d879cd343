"""Per-group guards on a scored batch: skip the groups whose vote is unclear, and reshape advantages so that a
confident group teaches more and a minority answer is not driven to zero.

- skip (rewards set to None: no gradient): the top answer holds less than `min_majority_share` of the group, or the
  group is polarized (the runner-up holds at least `polarized_ratio` of the top answer's votes). A majority vote on
  such a group is close to a coin flip, and a wrong pseudo-label learned there is the lock-in TTRL-Guard measures.
- advantage scale [P][n], multiplied into the advantages by `train_step`: the group's majority share when
  `agreement_scaling` (scaling rewards would do nothing: group-normalized advantages divide the scale out), times
  `minority_weight` for a sample whose answer differs from the majority's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tao_engine.rl.guards.answers import AnswerKeys, GroupVote, group_vote
from tao_engine.rl.guards.config import GuardsSection

Rewards = list[list[float | None]]  # [P][n]


@dataclass(frozen=True)
class ShapedGroups:
    rewards: Rewards  # [P][n], None for every sample of a skipped group
    advantage_scale: list[list[float]] | None  # [P][n]; None when no reshaping is configured
    skipped_unclear: int  # groups skipped for a low majority share
    skipped_polarized: int
    votes: list[GroupVote]


def shape_groups(rewards: Rewards, keys: AnswerKeys, guards: GuardsSection) -> ShapedGroups:
    votes = [group_vote(k) for k in keys]
    out: Rewards = []
    scales: list[list[float]] = []
    unclear = polarized = 0
    for row, group_keys, vote in zip(rewards, keys, votes, strict=True):
        skip = None
        if guards.min_majority_share > 0 and vote.share < guards.min_majority_share:
            skip, unclear = "unclear", unclear + 1
        elif (guards.polarized_ratio > 0 and vote.runner_up_votes > 0
              and vote.runner_up_votes >= guards.polarized_ratio * vote.top_votes):
            skip, polarized = "polarized", polarized + 1
        out.append([None] * len(row) if skip else list(row))
        scales.append(_scale(group_keys, vote, guards))
    return ShapedGroups(out, scales if guards.reshapes_advantages else None, unclear, polarized, votes)


def _scale(keys: Sequence[object], vote: GroupVote, guards: GuardsSection) -> list[float]:
    base = vote.share if guards.agreement_scaling else 1.0
    return [base * (guards.minority_weight if k is not None and k != vote.top else 1.0) for k in keys]
