"""Majority vote: numeric normalization, ties broken by first appearance, missing answers, margin metrics."""

from __future__ import annotations

import pytest

from tao_engine.scoring.composite import CompositeScorer, WeightedScorer
from tao_engine.scoring.majority import MajorityVoteScorer, majority, normalize_answer


def test_normalize_numbers_by_value_and_text_by_words():
    key = normalize_answer
    assert key("1,000") == key("1000.0") == key(" 1e3 ") == key("$1000$") == key("1000.")
    assert key("0.5") == key("1/2") == key(".5")
    assert key("-3") != key("3")
    assert key("Paris  France") == key("paris france")
    assert normalize_answer("Paris", case_sensitive=True) != normalize_answer("paris", case_sensitive=True)
    assert key("1e99999")[0] == "text"  # no giant exponent turned into a giant number


def test_majority_tie_goes_to_first_seen():
    assert majority(["b", "a", "a", "b", None]) == ("b", 2, 2)
    assert majority([None, "a", "b", "b"]) == ("b", 2, 1)
    assert majority([None, None]) == (None, 0, 0)


def test_scores_with_numbers_ties_and_missing_answers():
    s = MajorityVoteScorer()  # \boxed{...}, else the last number
    groups = [
        [r"so \boxed{12}", "the answer is 12.0", "it's 13", "no idea", r"\boxed{1,2}"],  # 12 wins 2-1-1
        ["x = 3", "x = 4", "x = 4", "x = 3"],  # tie 2-2: 3 appears first
        ["nothing", "still nothing"],  # no answers at all
    ]
    out = s.score_groups(["a", "b", "c"], groups)
    assert out[0] == [1.0, 1.0, 0.0, None, 0.0]
    assert out[1] == [1.0, 0.0, 0.0, 1.0]
    assert out[2] == [None, None]
    m = s.metrics()
    assert m["agreement"] == pytest.approx((2 / 4 + 2 / 4) / 2)
    assert m["margin"] == pytest.approx((1 / 4 + 0) / 2)
    assert m["tie_frac"] == pytest.approx(0.5)
    assert m["no_answer_frac"] == pytest.approx(3 / 11)
    assert s.metrics() == {"no_answer_frac": 0.0}  # reset after reading


def test_text_answers_with_boxed_extractor():
    s = MajorityVoteScorer(extractor="boxed")
    out = s.score_groups(["q"], [[r"\boxed{Paris}", r"\boxed{ paris }", r"\boxed{Lyon}", "Paris"]])
    assert out == [[1.0, 1.0, 0.0, None]]


def test_in_composite_reports_agreement_and_margin():
    comp = CompositeScorer([WeightedScorer(MajorityVoteScorer())])
    rep = comp.score_groups(["q"], [["1", "1", "2"]])
    assert rep.scores == [[1.0, 1.0, 0.0]]
    assert rep.metrics["majority_vote/agreement"] == pytest.approx(2 / 3)
    assert rep.metrics["majority_vote/margin"] == pytest.approx(1 / 3)


def test_unknown_extractor():
    with pytest.raises(ValueError, match="unknown extractor"):
        MajorityVoteScorer(extractor="nope")
