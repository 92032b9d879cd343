"""Reading a user's line-oriented text file (JSONL prompts) so that every error names the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path


def utf8_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line; a line that is not UTF-8 is a ValueError naming file:line. Lines are decoded
    one by one (a text-mode file decodes ahead in chunks, and its error would name the wrong line)."""
    path = Path(path)
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{number}: not UTF-8 text ({exc.reason} at column {exc.start + 1}); save "
                                 "the file as UTF-8") from None


def json_object_lines(path: str | Path, expected: str = "a JSON object") -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; a line that is not JSON, or not an object, is a
    ValueError naming file:line (`expected` says what each line must be, for that message)."""
    for number, line in utf8_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, Mapping):
            raise ValueError(f"{path}:{number}: each line must be {expected}")
        yield number, dict(obj)
