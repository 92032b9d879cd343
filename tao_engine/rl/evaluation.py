"""Held-out evaluation during tuning: greedy answers to eval prompts, their label-free score, and (when the eval
file carries an "answer" per prompt) accuracy. Labels are used only here, to monitor a run, never to train."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.rl.prompt_data import PromptRecord, contexts_by_key
from tao_engine.rl.rollouts import rollout
from tao_engine.rl.score_rollouts import score


def extract_answer(text: str, extractor: str) -> str | None:
    from tao_engine.scoring import extract

    if extractor == "exact":
        return text.strip()
    fn = getattr(extract, extractor, None)
    if fn is None:
        raise ValueError(f"evaluate: unknown extractor {extractor!r}")
    return fn(text)


def answers_match(predicted: str | None, expected: Any) -> bool:
    if predicted is None or expected is None:
        return False
    a, b = str(predicted).strip().replace(",", ""), str(expected).strip().replace(",", "")
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    except ValueError:
        return a == b


def evaluate(
    engine: Any,
    records: Sequence[PromptRecord],
    scorer: Any,
    extractor: str = "boxed_or_last_number",
    max_tokens: int = 64,
) -> dict[str, float]:
    """{"score": mean label-free score of the greedy answers, "accuracy": fraction matching "answer" (when given)}."""
    sampling = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens)
    contexts = contexts_by_key(records)
    answers = contexts.pop("answer", None)
    out = score(rollout(engine, [r.prompt for r in records], sampling), scorer, contexts)
    values = [s for group in out.rewards or [] for s in group if s is not None]
    metrics = {"score": sum(values) / len(values) if values else math.nan}
    if answers is not None:
        texts = [group[0] for group in out.completion_texts]
        hits = [answers_match(extract_answer(t, extractor), a) for t, a in zip(texts, answers, strict=True)]
        metrics["accuracy"] = sum(hits) / len(hits)
    return metrics
