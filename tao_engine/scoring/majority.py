"""Majority vote (as in TTRL): the answer most of a prompt's candidates give is taken as the pseudo-label, and each
candidate is rewarded for agreeing with it. No label is needed: the group is its own judge."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

from tao_engine.scoring.base import Scores
from tao_engine.scoring.extract import get_extractor

_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUMERIC = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,3})?(?:/\d+)?")  # exponent <= 999: no 1e99999


def normalize_answer(answer: str, case_sensitive: bool = False) -> Hashable:
    """A key under which equal answers coincide: numbers by value ("1,000" == "1000.0" == "1e3", "0.5" == "1/2"),
    other text with whitespace collapsed (and case folded unless `case_sensitive`)."""
    text = answer.strip().strip("$").strip().rstrip(".").strip()
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if _NUMERIC.fullmatch(text):
        try:
            return ("num", Fraction(text))
        except (ValueError, ZeroDivisionError):
            pass
    text = " ".join(text.split())
    return ("text", text if case_sensitive else text.casefold())


def majority(keys: Sequence[Hashable | None]) -> tuple[Hashable | None, int, int]:
    """(winning key, its votes, the runner-up's votes) over the non-None keys. A tie goes to the answer that
    appears first in the group (Counter keeps first-seen order and max() returns the first maximum)."""
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None, 0, 0
    winner = max(counts, key=counts.__getitem__)
    runner_up = max((c for k, c in counts.items() if k != winner), default=0)
    return winner, counts[winner], runner_up


@dataclass
class MajorityVoteScorer:
    """Group scorer: 1.0 for a candidate whose extracted answer equals the group's majority answer, 0.0 for one
    with another answer, None for one with no answer extracted (all None when no candidate has one).
    Metrics: `agreement` (mean share of answered candidates in the majority), `margin` (mean (top - runner-up)
    votes / answered), `tie_frac`, `no_answer_frac`."""

    name: ClassVar[str] = "majority_vote"
    extractor: str = "boxed_or_last_number"  # how a candidate's answer is read (an extractor name: last_number, ...)
    case_sensitive: bool = False  # false: answers compare case-folded
    _sums: Counter = field(default_factory=Counter, init=False, repr=False)

    def __post_init__(self) -> None:
        self._extract = get_extractor(self.extractor)

    def answer_keys(self, prompts: Sequence[str], groups: Sequence[Sequence[str]],
                    **context: Any) -> list[list[Hashable | None]]:
        """[P][n] the normalized extracted answer of each candidate (None: none extracted): what the vote counts."""
        return [[None if a is None else normalize_answer(a, self.case_sensitive)
                 for a in (self._extract(c) for c in group)] for group in groups]

    def score_groups(self, prompts: Sequence[str], groups: Sequence[Sequence[str]], **context: Any) -> list[Scores]:
        out = []
        for keys in self.answer_keys(prompts, groups):
            winner, top, second = majority(keys)
            answered = sum(k is not None for k in keys)
            self._sums["candidates"] += len(keys)
            self._sums["no_answer"] += len(keys) - answered
            if answered:
                self._sums["groups"] += 1
                self._sums["agreement"] += top / answered
                self._sums["margin"] += (top - second) / answered
                self._sums["ties"] += top == second
            out.append([None if k is None else float(k == winner) for k in keys])
        return out

    def metrics(self) -> dict[str, float]:
        """agreement (mean share of a group's answered candidates in its majority), margin (mean (top - runner-up)
        / answered), tie_frac (groups whose top two tie), no_answer_frac (candidates with no answer extracted)."""
        s, g = self._sums, self._sums["groups"]
        out = {"no_answer_frac": s["no_answer"] / s["candidates"] if s["candidates"] else 0.0}
        if g:
            out.update(agreement=s["agreement"] / g, margin=s["margin"] / g, tie_frac=s["ties"] / g)
        self._sums.clear()
        return out
