"""Response transforms on ordinary and odd outputs: the direct answer, or None when there is none."""

from __future__ import annotations

import pytest

from tao_engine.rl.exploration.config import TransformConfig
from tao_engine.rl.exploration.transforms import apply_transform

AFTER = TransformConfig(kind="after_marker", marker="Answer:")


@pytest.mark.parametrize(
    ("transform", "text", "expected"),
    [
        (AFTER, "Think: 2+3 is 5.\nAnswer: 5", "5"),
        (AFTER, "Answer: 4. Wait, recheck.\nAnswer:  5 \n", "5"),  # the last marker wins, stripped
        (AFTER, "no marker at all", None),
        (AFTER, "Answer:", None),  # nothing after it
        (AFTER, "Answer:   \n\t", None),
        (AFTER, "", None),
        (AFTER, "answer: 5", None),  # case-sensitive, as written in the template
        (TransformConfig(kind="after_marker", marker="####"), "work\n#### 42", "42"),
        (TransformConfig(kind="final_number"), "3 apples and 4 pears: 7 fruits", "7"),
        (TransformConfig(kind="final_number"), "so \\boxed{12} (not 13)", "12"),
        (TransformConfig(kind="final_number"), "no digits here", None),
        (TransformConfig(kind="final_number"), "total -1,234.5", "-1,234.5"),
        (TransformConfig(kind="final_sql"), "```sql\nSELECT 1\n```\nBetter:\n```sql\nSELECT 2\n```", "SELECT 2"),
        (TransformConfig(kind="final_sql"), "We want:\nSELECT name FROM t; done", "SELECT name FROM t"),
        (TransformConfig(kind="final_sql"), "```sql\nSELECT 1", "SELECT 1"),  # unclosed: the bare statement
        (TransformConfig(kind="final_sql"), "I cannot write it.", None),
        (TransformConfig(kind="final_sql"), "```sql\n\n```", None),  # an empty block is no answer
        (TransformConfig(kind="regex", pattern=r"<ans>(.*?)</ans>"), "<ans>a</ans> then <ans> b </ans>", "b"),
        (TransformConfig(kind="regex", pattern=r"\d+"), "x 1 y 22", "22"),  # no group: the whole last match
        (TransformConfig(kind="regex", pattern=r"<ans>(.*?)</ans>"), "<ans></ans>", None),
        (TransformConfig(kind="regex", pattern=r"z+"), "abc", None),
        (TransformConfig(kind="identity"), "  keep me \n", "keep me"),
        (TransformConfig(kind="identity"), " \n ", None),
        (AFTER, "Réponse… Answer: 日本 😀", "日本 😀"),
    ],
)
def test_transforms(transform, text, expected):
    assert apply_transform(text, transform) == expected


def test_non_text_is_a_type_error():
    with pytest.raises(TypeError, match="must be a str"):
        apply_transform(None, AFTER)  # type: ignore[arg-type]
