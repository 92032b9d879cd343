"""Cross-prompt collapse: one answer winning the vote on most prompts of a step. A per-group majority vote cannot
see it (each group agrees with itself); it is how majority-vote GRPO "solves" a routing task by naming the first
option for every prompt. Measured on the step's majority answers:

- `dominant_share`: the share of the step's prompts whose majority answer is the most common majority answer;
- `answer_entropy`: the entropy of the majority answers across prompts, normalized by log(#prompts) (1 = every
  prompt has its own answer, 0 = one answer everywhere).

A step with at least `collapse_min_prompts` answered prompts is collapsing when its dominant answer wins more than
`collapse_share` of them, or when its answer entropy fell below `collapse_entropy_ratio` times the baseline (the
readiness probe's, else the first step's). "penalize" gives the dominant answer's samples their group's lowest
reward (so the update pushes away from it), "stop" asks the loop to end the run.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from tao_engine.rl.guards.answers import AnswerKeys, GroupVote
from tao_engine.rl.guards.config import GuardsSection
from tao_engine.rl.guards.group_filter import Rewards


@dataclass(frozen=True)
class CrossPromptAnswers:
    dominant: Hashable | None
    dominant_share: float  # of the prompts with a majority answer
    answer_entropy: float  # normalized to [0, 1]; nan with fewer than 2 answered prompts
    prompts: int  # prompts with a majority answer


def cross_prompt_answers(votes: Sequence[GroupVote]) -> CrossPromptAnswers:
    tops = [v.top for v in votes if v.top is not None]
    if not tops:
        return CrossPromptAnswers(None, 0.0, math.nan, 0)
    counts = Counter(tops)
    dominant, wins = counts.most_common(1)[0]
    entropy = math.nan
    if len(tops) >= 2:
        total = len(tops)
        entropy = -sum(c / total * math.log(c / total) for c in counts.values()) / math.log(total)
    return CrossPromptAnswers(dominant, wins / len(tops), entropy, len(tops))


@dataclass(frozen=True)
class CollapseCheck:
    rewards: Rewards
    collapsing: bool
    penalized_samples: int
    answers: CrossPromptAnswers


def check_collapse(rewards: Rewards, keys: AnswerKeys, votes: Sequence[GroupVote], guards: GuardsSection,
                   baseline_entropy: float | None = None) -> CollapseCheck:
    answers = cross_prompt_answers(votes)
    enough = answers.prompts >= guards.collapse_min_prompts
    by_share = guards.collapse_share > 0 and answers.dominant_share > guards.collapse_share
    by_entropy = (guards.collapse_entropy_ratio > 0 and baseline_entropy is not None
                  and not math.isnan(answers.answer_entropy)
                  and answers.answer_entropy < guards.collapse_entropy_ratio * baseline_entropy)
    collapsing = enough and (by_share or by_entropy)
    if not collapsing or guards.collapse_action != "penalize":
        return CollapseCheck(rewards, collapsing, 0, answers)
    out: Rewards = []
    penalized = 0
    for row, group_keys in zip(rewards, keys, strict=True):
        present = [r for r in row if r is not None]
        if not present:
            out.append(list(row))
            continue
        floor = min(present)
        new = [floor if (k == answers.dominant and r is not None) else r for r, k in zip(row, group_keys, strict=True)]
        penalized += sum(1 for r, k in zip(row, group_keys, strict=True) if r is not None and k == answers.dominant)
        out.append(new)
    return CollapseCheck(out, True, penalized, answers)
