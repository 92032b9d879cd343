"""Reading a user's line-oriented text file (JSONL prompts) so that every error names the file and the line."""

from __future__ import annotations

from collections.abc import Iterator
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
