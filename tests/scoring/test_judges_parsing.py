"""Judge answer parsing on realistic outputs (scores, verdicts, per-candidate JSON), odd text never raising."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tao_engine.scoring.judges.parsing import (
    extract_json_values,
    parse_group_scores,
    parse_preference,
    parse_score,
    strip_thinking,
)

SCORES = [
    ("Score: 7/10", 7.0),
    ("The response is correct and concise.\n\nScore: 8", 8.0),
    ("**Score:** 9", 9.0),
    ("**8**", 8.0),
    ('{"score": 8}', 8.0),
    ('Here is my evaluation:\n```json\n{"score": 6, "reason": "misses an edge case"}\n```', 6.0),
    ("I'd rate it 7 out of 10.", 7.0),
    ("Rating: [[5]]", 5.0),
    ("[[3]]", 3.0),
    ("Final score: 6.5", 6.5),
    ("7", 7.0),
    (" 7. ", 7.0),
    ("SCORE = 5", 5.0),
    ("Overall score (out of 10): 7", 7.0),
    ("**Final Score: 8/10**", 8.0),
    ("Score:\n\n**7**", 7.0),
    ("{'score': 4}", 4.0),  # a Python dict rather than JSON
    ('{"score": "7/10"}', 7.0),
    ('{"score": 2, "comment": "wrong",}', 2.0),  # trailing comma
    ("Criterion 1 earns 3/4 points. Criterion 2 earns 2/4.\nScore: 8", 8.0),  # the labelled score wins
    ("Score: 4. On reflection the bug is minor.\nFinal score: 6", 6.0),  # the last labelled one wins
    ("<think>maybe score: 2? no...</think>\nScore: 9", 9.0),  # reasoning blocks are ignored
    ("The answer is right. I give it 9/10 overall.", 9.0),
    ("Score: 0", 0.0),
    ("Score: 10/10", 10.0),
    # unreadable or off the scale -> None
    ("Score: 12/10", None),
    ("Score: 12", None),
    ("Score: -1", None),
    ("Score: 4/5", None),  # another scale than the one asked for
    ('{"rating": 11}', None),
    ("<think>long reasoning, score: 2, then the judge ran out of tokens", None),
    ("The response is fine but could be better.", None),
    ("", None),
    ("ĠtheĠĠ quant]] [[ 12 wx 33 ok", None),
    ("1. correctness\n2. clarity\n3. concision", None),
]


@pytest.mark.parametrize("text,expected", SCORES)
def test_parse_score(text: str, expected: float | None):
    assert parse_score(text, 0, 10) == expected


def test_parse_score_other_scales():
    assert parse_score("Score: 4/5", 1, 5) == 4.0
    assert parse_score("Score: 0", 1, 5) is None
    assert parse_score('{"score": 0.85}', 0, 1) == 0.85
    assert parse_score("85/100", 0, 100) == 85.0


PREFERENCES = [
    ("Winner: A", "A"),
    ("Winner: B", "B"),
    ("Winner: tie", "tie"),
    ("[[A]]", "A"),
    ("[[C]]", "tie"),  # MT-Bench's tie
    ("B", "B"),
    ("A.", "A"),
    ("tie", "tie"),
    ("**Verdict:** Response B", "B"),
    ("Response A is better because it handles the empty list.", "A"),
    ("I prefer B.", "B"),
    ("It's a tie.", "tie"),
    ("Both responses are equally good.", "tie"),
    ('{"winner": "B"}', "B"),
    ('{"winner": "Response A", "reason": "more precise"}', "A"),
    ('```json\n{"preference": "tie"}\n```', "tie"),
    ("A good response should cite the table. Winner: B", "B"),  # the article "A" is not a verdict
    ("After weighing both, the final answer is A", "A"),
    ("Response B is slightly better at first sight. However B has a bug.\nWinner: A", "A"),  # the last verdict
    ("Answer: (B)", "B"),
    ("The better response is **A**.", "A"),
    ("Final verdict: [[B]]", "B"),
    ("Winner: **Response A**", "A"),
    ("Response A's query is wrong; Response B's is right. Winner: B", "B"),
    ("<think>Winner: A? Let me check again.</think>Winner: B", "B"),
    ("Winner: Alice", None),
    ("Both have merits and flaws.", None),
    ("ĠtheĠĠ quant]] [[ 12 wx 33 ok", None),
    ("", None),
]


@pytest.mark.parametrize("text,expected", PREFERENCES)
def test_parse_preference(text: str, expected: str | None):
    assert parse_preference(text) == expected


IDS = ["1", "2", "3"]
GROUPS = [
    ('{"1": 7, "2": 3, "3": 9}', {"1": 7.0, "2": 3.0, "3": 9.0}),
    ('```json\n{"scores": {"candidate_1": 8, "candidate_2": 2, "candidate_3": 5}}\n```',
     {"1": 8.0, "2": 2.0, "3": 5.0}),
    ('{"scores": [{"id": 1, "score": 4}, {"id": "2", "score": 6}, {"id": 3, "score": 11}]}',
     {"1": 4.0, "2": 6.0, "3": None}),  # 11 is off the scale
    ('[{"candidate": "1", "score": 2}, {"candidate": "3", "score": 8}]', {"1": 2.0, "2": None, "3": 8.0}),
    ('{"Candidate 1": {"score": 3, "explanation": "x"}, "Candidate 2": {"score": 4}}',
     {"1": 3.0, "2": 4.0, "3": None}),
    ('{"scores": [7, 5, 3]}', {"1": 7.0, "2": 5.0, "3": 3.0}),
    ('{"1": 7, "2": "n/a", "3": "6"}', {"1": 7.0, "2": None, "3": 6.0}),
    ('First {"1": 1, "2": 1, "3": 1} then, corrected: {"1": 9, "2": 4, "3": 6}', {"1": 9.0, "2": 4.0, "3": 6.0}),
    ("Candidate 1: 7\nCandidate 2: 5/10\nCandidate 3: 2", {"1": 7.0, "2": 5.0, "3": 2.0}),
    ("- **1**: 6\n- **2**: 8", {"1": 6.0, "2": 8.0, "3": None}),
    ("Response 2 - 9/10\nResponse 3 - 4/5", {"1": None, "2": 9.0, "3": None}),
    ('<think>{"1": 0}</think>{"1": 5, "2": 5, "3": 5}', {"1": 5.0, "2": 5.0, "3": 5.0}),
    ("1. The first is good\n2. The second is bad", {"1": None, "2": None, "3": None}),
    ('{"4": 7, "5": 2}', {"1": None, "2": None, "3": None}),  # ids that do not exist
    ("ĠtheĠĠ quant]] [[ 12 wx 33 ok", {"1": None, "2": None, "3": None}),
]


@pytest.mark.parametrize("text,expected", GROUPS)
def test_parse_group_scores(text: str, expected: dict):
    assert parse_group_scores(text, IDS, 0, 10) == expected


def test_json_extraction_and_thinking():
    text = 'pre {"a": [1, {"b": "}"}]} mid [1, 2] post {broken'
    assert extract_json_values(text) == [{"a": [1, {"b": "}"}]}, [1, 2]]
    assert strip_thinking("x<think>y</think>z") == "x z"
    assert strip_thinking("x<think>never closed") == "x "


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}[]\"':,0123456789 ABabScore/*\n<>think.-")), max_size=80))
def test_parsers_never_raise_on_odd_text(text: str):
    score = parse_score(text, 0, 10)
    assert score is None or 0 <= score <= 10
    assert parse_preference(text) in (None, "A", "B", "tie")
    parsed = parse_group_scores(text, IDS, 0, 10)
    assert set(parsed) == set(IDS) and all(v is None or 0 <= v <= 10 for v in parsed.values())
