"""Deterministic train / probe / test splits for the generated tasks: draw until enough distinct prompts exist (by
the question's text), then a seeded shuffle splits them, so no test question appears in training or in the probe."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SPLIT_SIZES = {"train": 400, "probe": 48, "test": 200}  # train unlabeled; probe and test labeled (never trained on)


@dataclass(frozen=True)
class Splits:
    train: list[dict[str, Any]]
    probe: list[dict[str, Any]]
    test: list[dict[str, Any]]


def draw_splits(draw: Callable[[random.Random], dict[str, Any]], key: Callable[[dict[str, Any]], str], name: str,
                seed: int, sizes: dict[str, int] | None = None) -> Splits:
    """`draw(rng)` -> one record; `key(record)` -> the text that makes two records the same question."""
    sizes = sizes or SPLIT_SIZES
    total = sum(sizes.values())
    rng = random.Random(f"tao-bench-{name}:{seed}")
    seen: dict[str, dict[str, Any]] = {}
    attempts = 0
    while len(seen) < total:
        attempts += 1
        if attempts > 50 * total:
            raise RuntimeError(f"{name}: only {len(seen)} distinct questions after {attempts} draws; widen the pools")
        record = draw(rng)
        seen.setdefault(key(record), record)
    records = list(seen.values())
    random.Random(f"tao-bench-{name}-split:{seed}").shuffle(records)
    a, b = sizes["train"], sizes["train"] + sizes["probe"]
    return Splits(records[:a], records[a:b], records[b:total])
