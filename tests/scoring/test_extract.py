"""Answer extraction helpers."""

from __future__ import annotations

import pytest

from tao_engine.scoring.extract import (
    boxed,
    boxed_or_last_number,
    code_block,
    get_extractor,
    json_text,
    last_number,
    python_block,
    sql_block,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("so 3 apples and 12 pears: 15", "15"),
    ("total -2.5.", "-2.5"),
    ("about 1,234,567 people", "1,234,567"),
    ("ratio 3/4", "3/4"),
    ("tiny 1e-3", "1e-3"),
    ("no digits here", None),
])
def test_last_number(text, expected):
    assert last_number(text) == expected


def test_boxed_nested_and_last():
    assert boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert boxed(r"\boxed{ {a}{b{c}} }") == "{a}{b{c}}"
    assert boxed(r"\fbox{7}") == "7"
    assert boxed(r"unclosed \boxed{1 + {2}") is None
    assert boxed("nothing") is None
    assert boxed_or_last_number("answer is 42") == "42"
    assert boxed_or_last_number(r"3 then \boxed{x=4}") == "x=4"


def test_code_block_language_and_last():
    text = "```python\nprint(1)\n```\ntext\n```js\nconsole.log(2)\n```\n```python\nprint(3)\n```"
    assert code_block(text) == "print(3)"
    assert code_block(text, "js") == "console.log(2)"
    assert code_block(text, "JS") == "console.log(2)"
    assert code_block(text, "rust") is None
    assert code_block("```python\nprint(1)\n") is None  # truncated: no closing fence
    assert python_block("```\nx = 1\n```") == "x = 1"
    assert python_block("```py\nx = 2\n```") == "x = 2"


def test_sql_block_variants():
    assert sql_block("Here:\n```sql\nSELECT a FROM t;\n```") == "SELECT a FROM t;"
    assert sql_block("```\nWITH x AS (SELECT 1) SELECT * FROM x\n```") == "WITH x AS (SELECT 1) SELECT * FROM x"
    assert sql_block("The query is:\nselect name\nfrom users where id = 3; then done") == \
        "select name\nfrom users where id = 3"
    assert sql_block("I would select the best option") is None  # SELECT must start a line
    assert sql_block("no sql") is None


def test_json_text():
    assert json_text('Result: {"a": [1, 2]} done') == '{"a": [1, 2]}'
    assert json_text('```json\n{"b": 1}\n```') == '{"b": 1}'
    assert json_text("bad {not json} then [1, 2]") == "[1, 2]"
    assert json_text("nothing") is None


def test_get_extractor_unknown():
    assert get_extractor("boxed") is boxed
    with pytest.raises(ValueError, match=r"unknown extractor 'boxd'.*'boxed'"):
        get_extractor("boxd")


def test_json_canonical_ignores_layout_and_key_order():
    from tao_engine.scoring.extract import json_canonical

    a = json_canonical('JSON:\n{\n  "b": 1,\n  "a": "x"\n}')
    assert a == json_canonical('{"a":"x","b":1}') == '{"a":"x","b":1}'
    assert json_canonical("no json") is None and json_canonical('{"a": 1') is None
