"""The "grounded" scorer: a reply's span or JSON values must occur in the prompt's source text."""

from __future__ import annotations

import pytest

from tao_engine.scoring.grounded import GroundedScorer
from tao_engine.scoring.registry import build_composite

SOURCE = "Lena Ortiz, 42, grew up in Porto but now lives in Denver, where she works as a nurse."


def test_span_mode_wants_a_short_copy_of_the_source():
    scorer = GroundedScorer(mode="span", source_key="passage", max_words=3)
    replies = ["Denver", "  denver. ", "in Denver, where she", "Lisbon", "Den", "Denver\nPorto", ""]
    assert scorer.score([""] * 7, replies, passage=[SOURCE] * 7) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert scorer.metrics() == {"no_source": 0.0, "ungrounded": 4.0, "too_long": 1.0}
    assert scorer.score([""], ["Denver"], passage=[None]) == [None]  # no source: not applicable


def test_json_values_mode_scores_the_share_of_values_found():
    scorer = GroundedScorer(mode="json_values")
    replies = ['{"name": "Lena Ortiz", "age": 42, "city": "Denver"}',
               '{"name": "Lena Ortiz", "age": 24, "city": "Denver", "ok": true}',
               'JSON: {"name": "Maria", "city": "Porto"}',
               "no json here", "{}"]
    scores = scorer.score([""] * 5, replies, source=[SOURCE] * 5)
    assert scores == pytest.approx([1.0, 2 / 3, 0.5, 0.0, 0.0])


def test_registered_and_validated():
    composite = build_composite([{"name": "grounded", "mode": "span", "source_key": "passage"}])
    assert composite.entries[0].scorer.name == "grounded"
    with pytest.raises(ValueError, match="mode must be one of"):
        GroundedScorer(mode="words")
    with pytest.raises(ValueError, match="max_words must be an integer"):
        GroundedScorer(max_words=-1)
