"""Rule scorers: regex, tag format, length, required / forbidden strings, JSON Schema."""

from __future__ import annotations

import json

import pytest

from tao_engine.scoring.rules import (
    ForbiddenStringsScorer,
    JsonSchemaScorer,
    LengthScorer,
    RegexScorer,
    RequiredStringsScorer,
    TagFormatScorer,
)

P = ["prompt"] * 4


def test_regex_modes_flags_negate():
    texts = ["Answer: 42", "answer: x", "The Answer: 7", "none"]
    assert RegexScorer(r"Answer: \d+").score(P, texts) == [1.0, 0.0, 1.0, 0.0]
    assert RegexScorer(r"answer: \d+", mode="match", flags=["IGNORECASE"]).score(P, texts) == [1.0, 0.0, 0.0, 0.0]
    assert RegexScorer(r"none", mode="fullmatch", negate=True).score(P, texts) == [1.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="does not compile"):
        RegexScorer("(")
    with pytest.raises(ValueError, match="unknown flag"):
        RegexScorer("a", flags=["IGNORE"])


def test_tag_format():
    good = "<think>a\nb</think>\n<answer>4</answer>\n"
    texts = [good, "<answer>4</answer><think>a</think>", "hi <think>a</think><answer>4</answer>",
             "<think>a</think><answer>4</answer><answer>5</answer>"]
    assert TagFormatScorer().score(P, texts) == [1.0, 0.0, 0.0, 0.0]
    assert TagFormatScorer(allow_outside_text=True).score(P, texts) == [1.0, 0.0, 1.0, 0.0]
    assert TagFormatScorer(tags=["answer"]).score(["p"], ["<answer>1</answer>"]) == [1.0]


def test_length_chars_and_words():
    texts = ["abc", "a b c d e", "", "abcdefghij"]
    assert LengthScorer(min_length=1, max_length=5).score(P, texts) == [1.0, 0.0, 0.0, 0.0]
    assert LengthScorer(min_length=3, unit="words").score(P, texts) == [0.0, 1.0, 0.0, 0.0]
    assert LengthScorer(max_length=0).score(P, texts) == [0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="min_length 5 > max_length 2"):
        LengthScorer(min_length=5, max_length=2)
    with pytest.raises(ValueError, match="give min_length"):
        LengthScorer()


def test_required_and_forbidden_strings():
    texts = ["SELECT x FROM t", "select x", "FROM only", "DROP TABLE"]
    req = RequiredStringsScorer(strings=["SELECT", "FROM"])
    assert req.score(P, texts) == [1.0, 0.0, 0.0, 0.0]
    assert RequiredStringsScorer(strings=["select", "from"], case_sensitive=False,
                                 partial_credit=True).score(P, texts) == [1.0, 0.5, 0.5, 0.0]
    assert ForbiddenStringsScorer(strings=["drop", "delete"], case_sensitive=False).score(P, texts) == \
        [1.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="list of strings"):
        RequiredStringsScorer(strings="SELECT")


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_schema_valid_invalid_unparseable():
    s = JsonSchemaScorer(schema=SCHEMA, parse_reward=0.25)
    texts = ['Sure: {"name": "Ann", "age": 3}', '```json\n{"name": "Bob", "age": -1}\n```',
             '{"name": "Cy", "age": 2, "x": 1}', "{name: Ann}"]
    assert s.score(P, texts) == [1.0, 0.25, 0.25, 0.0]
    assert s.metrics() == {"parse_failures": 1.0, "schema_failures": 2.0}
    assert s.metrics() == {"parse_failures": 0.0, "schema_failures": 0.0}  # counters reset on read


def test_json_schema_from_context_and_file(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"type": "array", "items": {"type": "number"}}))
    s = JsonSchemaScorer(schema_path=str(path), extract="stripped")
    assert s.score(["p", "p"], ["[1, 2.5]", 'x [1, "a"]']) == [1.0, 0.0]  # stripped: the 2nd does not parse
    s2 = JsonSchemaScorer()
    texts = ['{"a": 1}', '{"a": "x"}', '[1]']
    ctx = [{"properties": {"a": {"type": "integer"}}}, json.dumps({"properties": {"a": {"type": "integer"}}}), None]
    assert s2.score(["p"] * 3, texts, schema=ctx) == [1.0, 0.0, 1.0]


def test_json_schema_rejects_broken_schema():
    with pytest.raises(ValueError, match="invalid JSON Schema"):
        JsonSchemaScorer(schema={"type": "no_such_type"})
