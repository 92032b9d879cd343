"""Grounded in the source ("grounded"): a label-free check that what a reply states comes from the text it was given.
Extraction and reading-comprehension replies should copy from their source, so a value that appears nowhere in it
was made up.

- mode "span": the reply (stripped, one line) is a span of the source: its normalized text occurs in the source's
  normalized text, and it is at most `max_words` words long (0 = any length). 1.0 or 0.0.
- mode "json_values": the reply is JSON (extracted as `extract` says); the score is the share of its leaf values
  (strings and numbers, in objects and arrays) that occur in the source; 0.0 when no JSON parses or it has no values.

Normalization: case folded (unless `case_sensitive`), punctuation other than inside words dropped, whitespace
collapsed; numbers match as written ("34" in "is 34 years old"). The source is the context key `source_key` of each
prompt (e.g. "source", "passage"); a prompt without it scores None (not applicable).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tao_engine.scoring.base import Scores
from tao_engine.scoring.extract import get_extractor

GROUNDED_MODES = ("span", "json_values")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_text(text: str, case_sensitive: bool = False) -> str:
    flat = " ".join(_PUNCT.sub(" ", text).split())
    return flat if case_sensitive else flat.casefold()


def json_leaf_values(value: Any) -> list[str]:
    """The strings and numbers of a parsed JSON value, as text (booleans and nulls are not statements of fact)."""
    if isinstance(value, dict):
        return [v for item in value.values() for v in json_leaf_values(item)]
    if isinstance(value, list):
        return [v for item in value for v in json_leaf_values(item)]
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float, str)):
        return [str(value)]
    return []


@dataclass
class GroundedScorer:
    name: ClassVar[str] = "grounded"
    mode: str = "span"  # span (the reply is a span of the source) or json_values (the share of its JSON values found)
    source_key: str = "source"  # the context key holding each prompt's source text
    max_words: int = 0  # span: the longest reply that counts, in words (0 = any length)
    extract: str = "json"  # json_values: how the JSON is found in the reply (an extractor name)
    case_sensitive: bool = False  # false: compare case-folded
    _counts: dict[str, int] = field(default_factory=lambda: {"no_source": 0, "ungrounded": 0, "too_long": 0},
                                    init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in GROUNDED_MODES:
            raise ValueError(f"grounded: mode must be one of {GROUNDED_MODES}, got {self.mode!r}")
        if isinstance(self.max_words, bool) or not isinstance(self.max_words, int) or self.max_words < 0:
            raise ValueError(f"grounded: max_words must be an integer >= 0 (0 = any length), got {self.max_words!r}")
        if not isinstance(self.source_key, str) or not self.source_key:
            raise ValueError("grounded: source_key must name the context key that holds the source text")
        self._extract = get_extractor(self.extract)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Scores:
        sources = context.get(self.source_key)
        out: Scores = []
        for j, completion in enumerate(completions):
            source = sources[j] if sources is not None else None
            if not isinstance(source, str):
                self._counts["no_source"] += 1
                out.append(None)
                continue
            haystack = f" {normalize_text(source, self.case_sensitive)} "
            out.append(self._span(completion, haystack) if self.mode == "span" else self._values(completion, haystack))
        return out

    def _found(self, text: str, haystack: str) -> bool:
        needle = normalize_text(text, self.case_sensitive)
        return bool(needle) and f" {needle} " in haystack

    def _span(self, completion: str, haystack: str) -> float:
        reply = completion.strip()
        if "\n" in reply or not self._found(reply, haystack):
            self._counts["ungrounded"] += 1
            return 0.0
        if self.max_words and len(reply.split()) > self.max_words:
            self._counts["too_long"] += 1
            return 0.0
        return 1.0

    def _values(self, completion: str, haystack: str) -> float:
        text = self._extract(completion)
        try:
            values = json_leaf_values(json.loads(text)) if text is not None else []
        except json.JSONDecodeError:
            values = []
        if not values:
            self._counts["ungrounded"] += 1
            return 0.0
        found = sum(self._found(v, haystack) for v in values)
        self._counts["ungrounded"] += found < len(values)
        return found / len(values)

    def metrics(self) -> dict[str, float]:
        """no_source (prompts without a source text: scored None), ungrounded (replies with something not found in
        the source), too_long (span replies over max_words); counts since the previous call."""
        out = {k: float(v) for k, v in self._counts.items()}
        for key in self._counts:
            self._counts[key] = 0
        return out
