"""Answer extraction from free text: last number, \\boxed{...}, fenced code block, SQL, JSON. Each returns the
extracted text or None when there is none; `EXTRACTORS` maps the names that configs use to them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

# -1,234.5 | 12.5e-3 | .5 | 3/4 ; thousands groups only in the comma form
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)(?:/\d+)?")
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_SQL_START = re.compile(r"(?im)^[ \t]*(SELECT|WITH)\b")


def last_number(text: str) -> str | None:
    """The last number in `text`, as written ("1,234", "-0.5", "3/4", "1e-3")."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), nested braces included; None when none is closed."""
    result = None
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    result = text[start:i].strip()
                    break
    return result


def boxed_or_last_number(text: str) -> str | None:
    return boxed(text) or last_number(text)


def code_block(text: str, language: str | None = None) -> str | None:
    """The last closed ``` fenced block; with `language`, the last whose info string names it (case-insensitive).
    An unclosed fence (a truncated generation) does not count."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    if language is not None:
        blocks = [b for b in blocks if b[0] == language.lower()]
    return blocks[-1][1].strip("\n") if blocks else None


def python_block(text: str) -> str | None:
    """A ```python (or ```py) block, else an untagged block."""
    for lang in ("python", "py", ""):
        found = code_block(text, lang)
        if found is not None:
            return found
    return None


def sql_block(text: str) -> str | None:
    """A ```sql block; else an untagged block that starts with SELECT/WITH; else a bare SELECT/WITH statement in the
    text, up to its first `;` (kept out) or a blank line."""
    found = code_block(text, "sql")
    if found is None:
        bare = code_block(text, "")
        if bare is not None and _SQL_START.match(bare):
            found = bare
    if found is not None:
        return found.strip() or None
    match = _SQL_START.search(text)
    if match is None:
        return None
    rest = text[match.start(1):]
    end = re.search(r";|\n[ \t]*\n|```", rest)
    stmt = rest[: end.start()] if end else rest
    return stmt.strip() or None


def json_text(text: str) -> str | None:
    """A ```json block; else the first JSON object or array that parses, found by scanning for `{` / `[`."""
    found = code_block(text, "json")
    if found is not None:
        return found.strip()
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", text):
        try:
            _, end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        return text[match.start():end]
    return None


def json_canonical(text: str) -> str | None:
    """The first JSON value in the text (as `json_text` finds it), re-serialized with sorted keys and no spaces, so
    that two replies holding the same object give the same string whatever their layout."""
    found = json_text(text)
    if found is None:
        return None
    try:
        return json.dumps(json.loads(found), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except json.JSONDecodeError:
        return None


def stripped(text: str) -> str | None:
    return text.strip() or None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "last_number": last_number,
    "boxed": boxed,
    "boxed_or_last_number": boxed_or_last_number,
    "code_block": code_block,
    "python_block": python_block,
    "sql": sql_block,
    "json": json_text,
    "json_canonical": json_canonical,
    "stripped": stripped,
}


def get_extractor(name: str) -> Callable[[str], str | None]:
    if name not in EXTRACTORS:
        raise ValueError(f"unknown extractor {name!r}; valid extractors are {sorted(EXTRACTORS)}")
    return EXTRACTORS[name]
