"""The readiness probe's verdict: "go", "weak" or "no-go", with each reason and its fix in plain words.

The thresholds restate what published label-free RL found (TTRL, INTUITOR, RLSC, SRT, TTRL-Guard): it gains only
where the model already gets the task right some of the time (pass@k well above zero), where the reward tells a
right answer from a wrong one, and where groups disagree enough to carry a gradient; without that it reinforces
noise or locks onto wrong answers. A check needs labels only where it says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GO, WEAK, NO_GO = "go", "weak", "no-go"
_RANK = {GO: 0, WEAK: 1, NO_GO: 2}

# (level, threshold): the level a statistic at or past the threshold gives.
ZERO_VARIANCE = ((NO_GO, 0.8), (WEAK, 0.5))  # share of groups whose rewards are all equal
NONE_SHARE = ((NO_GO, 0.8), (WEAK, 0.4))  # share of candidates no scorer scored
GRADIENT_GROUPS = ((NO_GO, 0.2), (WEAK, 0.5))  # share of groups with a gradient after the guards (at most)
MAJORITY_SHARE = ((WEAK, 0.3),)  # mean top-answer share (at most): votes scattered
DOMINANT_ANSWER = ((WEAK, 0.5),)  # one answer is the majority answer of this share of prompts (at least)
DOMINANT_MIN_PROMPTS = 8
PASS_AT_K = ((NO_GO, 0.10), (WEAK, 0.30))  # labeled: prompts with any right answer among k (at most)
PAIR_ACCURACY = ((NO_GO, 0.55), (WEAK, 0.65))  # labeled: right ranked above wrong (at most)
MIN_PAIRS = 10
HEADROOM = 0.10  # labeled: the reward's top pick must beat greedy by this much for the verdict to stay "go"


@dataclass(frozen=True)
class Finding:
    level: str
    reason: str
    fix: str


@dataclass(frozen=True)
class Verdict:
    level: str
    findings: list[Finding] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.level,
                "findings": [{"level": f.level, "reason": f.reason, "fix": f.fix} for f in self.findings]}

    def text(self) -> str:
        if not self.findings:
            return (f"verdict: {self.level}: the groups disagree, the scorers apply and nothing points to a collapse; "
                    "tune, and watch guard/ and score/ in metrics.jsonl")
        lines = [f"verdict: {self.level}"]
        lines += [f"  - [{f.level}] {f.reason}; fix: {f.fix}" for f in self.findings]
        return "\n".join(lines)


def verdict(stats: Mapping[str, Any], labeled: Mapping[str, Any] | None = None,
            votes_matter: bool = True) -> Verdict:
    """stats: `unlabeled_statistics`; labeled: `labeled_statistics` or None; votes_matter: the reward uses the
    group's answers (a majority vote or an agreement scorer), so scattered votes weaken it."""
    found: list[Finding] = []

    def above(value: float, table, make) -> None:
        for level, threshold in table:
            if not math.isnan(value) and value >= threshold:
                found.append(Finding(level, *make(value)))
                return

    def below(value: float, table, make) -> None:
        for level, threshold in table:
            if not math.isnan(value) and value < threshold:
                found.append(Finding(level, *make(value)))
                return

    above(stats["zero_variance_frac"], ZERO_VARIANCE, lambda v: (
        f"{v:.0%} of groups have equal rewards: no learning signal there",
        "raise [sampling] temperature or n, or add a scorer that tells the candidates apart"))
    above(stats["none_frac"], NONE_SHARE, lambda v: (
        f"the scorers gave no score to {v:.0%} of the candidates",
        "check that the replies have the form your scorers read (an answer line, a code block, JSON); a format "
        "rule with [guards] warmup_steps teaches it first"))
    below(stats["gradient_groups_frac"], GRADIENT_GROUPS, lambda v: (
        f"only {v:.0%} of groups would carry a gradient after the guards",
        "raise n or temperature; loosen [guards] min_majority_share / polarized_ratio"))
    if votes_matter and labeled is None:  # with labels, the reward's measured ranking says whether votes matter
        below(stats["majority_share_mean"], MAJORITY_SHARE, lambda v: (
            f"votes are scattered: the top answer holds {v:.0%} of a group on average, so the majority is close to "
            "a coin flip", "lower the temperature, raise n, or score with a verifier instead of a vote"))
    if stats["prompts"] >= DOMINANT_MIN_PROMPTS:
        above(stats["dominant_answer_share"], DOMINANT_ANSWER, lambda v: (
            f"one answer is the majority answer on {v:.0%} of the prompts: a vote-based reward can collapse onto it",
            "set [guards] collapse_share (e.g. 0.5) or check that the prompts really differ"))
    if labeled is not None:
        below(labeled["pass_at_k"], PASS_AT_K, lambda v: (
            f"the model finds a right answer for only {v:.0%} of the labeled prompts even with "
            f"{labeled['k']} samples: label-free RL can only reinforce what the model already produces sometimes",
            "use easier prompts or a stronger model, give a worked example in the prompt, or raise n"))
        if labeled["pairs"] >= MIN_PAIRS:
            below(labeled["pair_accuracy"], PAIR_ACCURACY, lambda v: (
                f"the reward ranks a right answer above a wrong one in {v:.0%} of {labeled['pairs']} pairs "
                "(50% is chance): it would teach noise", "fix or replace the scorer before tuning"))
        if labeled["maj_at_k"] < labeled["pass_at_1"] and votes_matter:
            found.append(Finding(WEAK, f"the majority answer is right less often ({labeled['maj_at_k']:.0%}) than "
                                       f"one sample ({labeled['pass_at_1']:.0%}): votes point at wrong answers",
                                 "score with a verifier, or lower the temperature"))
        greedy = labeled.get("greedy_accuracy")
        if greedy is not None and labeled["top_reward_correct"] - greedy < HEADROOM:
            found.append(Finding(WEAK, f"the reward's pick among {labeled['k']} samples is right "
                                       f"{labeled['top_reward_correct']:.0%} of the time and the greedy answer "
                                       f"{greedy:.0%}: tuning toward the reward's picks can gain about the difference",
                                 "a scorer that recognizes right answers (a verifier, a format or grounding rule) "
                                 "raises the first; a vote alone rarely beats greedy by much"))
    level = max((f.level for f in found), key=_RANK.__getitem__, default=GO)
    return Verdict(level, found)
