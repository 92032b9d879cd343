"""Benchmark records split in two: what a method may see (the prompt and label-free context) and the hidden gold.

TAO must never see a label. `split_labels` moves every label key out of a record before anything is built from it;
`LabelFreeScorer` wraps the scorer a TAO method uses and refuses any call whose context carries a label key, or an
SQL context value that contains a gold query; it also records the context keys it saw, for the cell's report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tao_engine.rl.prompt_data import PromptRecord

LABEL_KEYS = ("gold_sql", "answer")  # the labels of the SQL and math records ("steps" is a difficulty, no label)


@dataclass(frozen=True)
class Example:
    """One benchmark question: `record` is label-free (safe to hand to TAO); `gold` holds the labels by key."""

    record: PromptRecord
    gold: dict[str, Any]


def read_jsonl(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise ValueError(f"{path}: no records")
    return rows


def split_labels(row: Mapping[str, Any]) -> Example:
    """A dataset line -> Example; the prompt is "messages" (a chat), every non-label key becomes context."""
    if "messages" not in row:
        raise ValueError(f"benchmark record without 'messages': keys {sorted(row)}")
    context = {k: v for k, v in row.items() if k != "messages" and k not in LABEL_KEYS}
    gold = {k: row[k] for k in LABEL_KEYS if k in row}
    return Example(PromptRecord(list(row["messages"]), context), gold)


def load_examples(path: str | Path, limit: int | None = None) -> list[Example]:
    return [split_labels(row) for row in read_jsonl(path, limit)]


class LabelLeakError(AssertionError):
    """A label reached a scorer."""


class LabelFreeScorer:
    """Wraps a composite scorer; raises `LabelLeakError` when a label could reach it (see the module docstring)."""

    def __init__(self, scorer: Any, gold_sql: Sequence[str] = ()) -> None:
        self.scorer = scorer
        self._gold_sql = tuple(" ".join(q.split()).casefold() for q in gold_sql if q)
        self.seen_keys: set[str] = set()
        self.calls = 0

    def score_groups(self, prompts: Sequence[str], groups: Sequence[Sequence[str]], **context: Any) -> Any:
        self.calls += 1
        self.seen_keys.update(context)
        leaked = sorted(set(context) & set(LABEL_KEYS))
        if leaked:
            raise LabelLeakError(f"label key(s) {leaked} reached the TAO scorer")
        for key, values in context.items():
            for value in values:
                if isinstance(value, str) and self._contains_gold(value):
                    raise LabelLeakError(f"context {key!r} holds a gold SQL query")
        for prompt in prompts:
            if self._contains_gold(prompt):
                raise LabelLeakError("a prompt holds a gold SQL query")
        return self.scorer.score_groups(prompts, groups, **context)

    def _contains_gold(self, text: str) -> bool:
        flat = " ".join(text.split()).casefold()
        return any(q in flat for q in self._gold_sql)
