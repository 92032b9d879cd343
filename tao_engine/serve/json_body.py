"""A request body to JSON, refusing what JSON (and everything after it: sampling values, the table) cannot hold:
NaN and Infinity, strings that are not Unicode text (a lone surrogate escape), and nesting past MAX_JSON_DEPTH. Each
refusal is a 400 naming the fault, never a 500 from somewhere downstream."""

from __future__ import annotations

import json
from typing import Any

from tao_engine.serve.errors import APIError, bad_request

MAX_JSON_DEPTH = 64  # far beyond any OpenAI request (messages -> content parts -> text is 4); deeper is refused


def _not_json(constant: str) -> Any:
    # Python's parser takes NaN and Infinity; JSON does not.
    raise json.JSONDecodeError(f"{constant} is not a JSON value", constant, 0)


def _too_deep() -> APIError:
    return bad_request(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep", code="invalid_json")


def decode_json_body(data: bytes) -> Any:
    """The body's JSON value, or APIError 400 (invalid_json) saying why not."""
    try:
        body = json.loads(data, parse_constant=_not_json)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"We could not parse the JSON body of your request ({exc}). The body must be a JSON "
                          "object; set Content-Type: application/json.", code="invalid_json") from None
    except RecursionError:  # nested past the parser's own recursion limit
        raise _too_deep() from None
    _check_values(body)
    return body


def _check_values(value: Any) -> None:
    """400 for a body nested past MAX_JSON_DEPTH or holding a string that is not Unicode text (a lone surrogate
    from a \\ud800 escape, which nothing downstream can encode). Iterative: a deep body must not recurse here."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise bad_request("the JSON body holds a string with a lone surrogate escape (e.g. \\ud800): not "
                                  "Unicode text", code="invalid_json") from None
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep()
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
