"""The "arithmetic" scorer: every equation a reply shows must hold, and its answer must follow from the last one."""

from __future__ import annotations

from fractions import Fraction

import pytest

from tao_engine.scoring.arithmetic import ArithmeticScorer, equations, evaluate
from tao_engine.scoring.registry import build_composite


@pytest.mark.parametrize(("reply", "score"), [
    ("24 - 5 = 19\nAnswer: 19", 1.0),
    ("45 - 19 = 23\nAnswer: 23", 0.0),  # a slip a vote cannot see
    ("3 * 12 = 36 apples. 36 - 5 = 31.\nAnswer: 31", 1.0),
    ("each gets 18/2 = 9 beads. 9 - 18 = 18.\nAnswer: 18", 0.0),
    ("5 x 7 = 35\nAnswer: 35", 1.0),
    ("(2 + 3) × 4 = 20\nAnswer: 20", 1.0),
    ("4 + 3 = 7\nAnswer: 8", 0.0),  # the answer does not follow from the work
    ("x = 5 + 2 = 7\nAnswer: 7", 1.0),
    ("15 coins divided by 5 friends equals 3 coins each\nAnswer: 3", None),  # no work shown: not applicable
    ("Answer = 7", None),
    ("1 / 0 = 5\nAnswer: 5", 0.0),
])
def test_scores(reply, score):
    assert ArithmeticScorer().score([""], [reply]) == [score]


def test_evaluate_is_exact_and_refuses_what_is_not_arithmetic():
    assert evaluate("0.1 + 0.2") == Fraction(3, 10) and evaluate("7 ÷ 2") == Fraction(7, 2)
    assert evaluate("2 ** 100") is None and evaluate("__import__('os')") is None and evaluate("1" * 40 + " + 1") is None
    assert [e[2] for e in equations("a = 1 + 1 = 2, then 2 * 3 = 6")] == [Fraction(2), Fraction(6)]


def test_metrics_and_registry():
    scorer = build_composite([{"name": "arithmetic"}]).entries[0].scorer
    scorer.score([""] * 3, ["1 + 1 = 3", "no work", "2 + 2 = 4\nAnswer: 5"])
    assert scorer.metrics() == {"no_work": 1.0, "wrong_step": 1.0, "unfollowed": 1.0}
    with pytest.raises(ValueError, match="answer_pattern is not a regular expression"):
        ArithmeticScorer(answer_pattern="(")
