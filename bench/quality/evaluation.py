"""Held-out evaluation of a model on a task's test split (greedy answers checked against the hidden gold), and the
inference cost (greedy tokens/s) of a model on the same prompts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from bench.quality.records import Example
from bench.quality.tasks import Task
from tao_engine.engine import SamplingParams


def evaluate_accuracy(engine: Any, task: Task, examples: Sequence[Example], max_tokens: int) -> dict[str, Any]:
    """{"accuracy", "correct", "total", "completion_tokens", "seconds", "samples": first few answers}."""
    sampling = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, seed=0)
    start = time.perf_counter()
    outputs = engine.generate([ex.record.prompt for ex in examples], sampling)
    seconds = time.perf_counter() - start
    texts = [out.samples[0].text for out in outputs]
    hits = [task.is_correct(t, ex.gold, ex.record.context) for t, ex in zip(texts, examples, strict=True)]
    tokens = sum(len(out.samples[0].token_ids) for out in outputs)
    return {
        "accuracy": sum(hits) / len(hits),
        "correct": sum(hits),
        "total": len(hits),
        "completion_tokens": tokens,
        "seconds": seconds,
        "samples": [{"completion": t, "correct": h} for t, h in list(zip(texts, hits, strict=True))[:3]],
    }


def greedy_tokens_per_second(engine: Any, prompts: Sequence[Any], max_tokens: int, reps: int = 2) -> float:
    """Decode throughput of greedy generation with every answer forced to `max_tokens` tokens (ignore_eos), so two
    models generate exactly the same amount of work; the best of `reps` runs after one warm-up."""
    sampling = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, ignore_eos=True, seed=0)
    engine.generate(list(prompts[:1]), SamplingParams(n=1, temperature=0.0, max_tokens=2, seed=0))
    best = 0.0
    for _ in range(reps):
        start = time.perf_counter()
        outputs = engine.generate(list(prompts), sampling)
        seconds = time.perf_counter() - start
        tokens = sum(len(out.samples[0].token_ids) for out in outputs)
        best = max(best, tokens / seconds)
    return best
