"""What the readiness probe measures on a scored batch, without labels and (optionally) with them.

Without labels (from the rewards and the candidates' answer keys, tao_engine.rl.guards.answers):
reward mean and std, the share of groups whose rewards are all equal (no gradient), the share of None rewards, the
top answer's share of each group (mean and quartiles), distinct answers per group over n, each scorer's mean and
pass rate (score >= 0.5), the share of groups that would carry a gradient after the configured guards, and the
cross-prompt answer distribution (the dominant answer's share of prompts, the normalized entropy).

With labels (a per-candidate correctness [P][n]): pass@1 (the mean), pass@k (any of the n), maj@k (the majority
answer is right), the reward's pair accuracy (over pairs of a right and a wrong candidate of one group: the right
one has the higher reward; ties count half) and how often a group's top-rewarded candidate is right (a pick among
tied tops counts by the share of them that is right): the best-of-n answer the reward would teach.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from tao_engine.rl.guards.answers import AnswerKeys, group_vote
from tao_engine.rl.guards.collapse import cross_prompt_answers
from tao_engine.rl.guards.config import GuardsSection
from tao_engine.rl.guards.group_filter import shape_groups

Rewards = Sequence[Sequence[float | None]]  # [P][n]
PASS_SCORE = 0.5


def unlabeled_statistics(rewards: Rewards, keys: AnswerKeys,
                         scorer_rewards: Sequence[Mapping[str, Sequence[float | None]]] | None,
                         guards: GuardsSection) -> dict[str, Any]:
    present = [r for row in rewards for r in row if r is not None]
    total = sum(len(row) for row in rewards)
    groups = [[r for r in row if r is not None] for row in rewards]
    zero_var = sum(1 for g in groups if len(g) < 2 or max(g) - min(g) <= 1e-12)
    votes = [group_vote(k) for k in keys]
    shares = sorted(v.share for v in votes)
    shaped = shape_groups([list(r) for r in rewards], keys, guards)
    gradient = sum(1 for row in shaped.rewards
                   if len(vals := [r for r in row if r is not None]) >= 2 and max(vals) - min(vals) > 1e-12)
    cross = cross_prompt_answers(votes)
    n = max((len(row) for row in rewards), default=0)
    out: dict[str, Any] = {
        "prompts": len(rewards),
        "n": n,
        "reward_mean": statistics.fmean(present) if present else math.nan,
        "reward_std": statistics.pstdev(present) if len(present) > 1 else 0.0,
        "none_frac": (total - len(present)) / total if total else 0.0,
        "zero_variance_frac": zero_var / len(rewards) if rewards else math.nan,
        "gradient_groups_frac": gradient / len(rewards) if rewards else math.nan,
        "majority_share_mean": statistics.fmean(shares) if shares else math.nan,
        "majority_share_quartiles": _quartiles(shares),
        "no_answer_frac": statistics.fmean((v.size - v.answered) / max(1, v.size) for v in votes) if votes else 0.0,
        "distinct_answers_frac": statistics.fmean(v.distinct / max(1, v.size) for v in votes) if votes else 0.0,
        "dominant_answer_share": cross.dominant_share,
        "answer_entropy": cross.answer_entropy,
        "scorers": _per_scorer(scorer_rewards or []),
    }
    return out


def labeled_statistics(rewards: Rewards, keys: AnswerKeys, correct: Sequence[Sequence[bool]],
                       greedy_correct: Sequence[bool] | None = None) -> dict[str, Any]:
    prompts = len(correct)
    n = max((len(c) for c in correct), default=0)
    pairs = wins = 0.0
    top_right = 0
    majority_right = 0
    for row, group_keys, right in zip(rewards, keys, correct, strict=True):
        vote = group_vote(group_keys)
        if vote.top is not None:
            majority_right += any(ok for k, ok in zip(group_keys, right, strict=True) if k == vote.top)
        scored = [(r, ok) for r, ok in zip(row, right, strict=True) if r is not None]
        if scored:
            best = max(r for r, _ in scored)
            tied = [ok for r, ok in scored if r == best]
            top_right += sum(tied) / len(tied)  # a pick among tied tops is right this often
        for r_good, ok_good in scored:
            if not ok_good:
                continue
            for r_bad, ok_bad in scored:
                if ok_bad:
                    continue
                pairs += 1
                wins += 1.0 if r_good > r_bad else 0.5 if r_good == r_bad else 0.0
    out: dict[str, Any] = {
        "pass_at_1": statistics.fmean(sum(c) / max(1, len(c)) for c in correct) if correct else math.nan,
        "pass_at_k": sum(any(c) for c in correct) / prompts if prompts else math.nan,
        "k": n,
        "maj_at_k": majority_right / prompts if prompts else math.nan,
        "pair_accuracy": wins / pairs if pairs else math.nan,
        "pairs": int(pairs),
        "top_reward_correct": top_right / prompts if prompts else math.nan,
    }
    if greedy_correct is not None:
        out["greedy_accuracy"] = sum(greedy_correct) / len(greedy_correct) if greedy_correct else math.nan
    return out


def _quartiles(values: Sequence[float]) -> list[float]:
    if not values:
        return []
    if len(values) == 1:
        return [values[0]] * 3
    return [float(q) for q in statistics.quantiles(values, n=4, method="inclusive")]


def _per_scorer(scorer_rewards: Sequence[Mapping[str, Sequence[float | None]]]) -> dict[str, dict[str, float]]:
    names = sorted({name for per in scorer_rewards for name in per})
    out: dict[str, dict[str, float]] = {}
    for name in names:
        values = [v for per in scorer_rewards for v in per.get(name, ()) if v is not None]
        total = sum(len(per.get(name, ())) for per in scorer_rewards)
        out[name] = {
            "mean": statistics.fmean(values) if values else math.nan,
            "pass_rate": sum(v >= PASS_SCORE for v in values) / len(values) if values else math.nan,
            "none_frac": (total - len(values)) / total if total else 0.0,
        }
    return out
