"""Held-out evaluation during tuning: greedy answers to eval prompts, their label-free score, and (when the eval
file carries labels) accuracy by an evaluator (tao_engine.rl.evaluators). Labels are used only here, to monitor a
run, never to train."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.rl.evaluators import NumericEvaluator
from tao_engine.rl.prompt_data import PromptRecord, contexts_by_key
from tao_engine.rl.rollouts import rollout
from tao_engine.rl.score_rollouts import score


def evaluate(
    engine: Any,
    records: Sequence[PromptRecord],
    scorer: Any,
    extractor: str = "boxed_or_last_number",
    max_tokens: int = 64,
    evaluator: Any = None,
) -> dict[str, float]:
    """Greedy answers to the eval prompts: {"score": the mean label-free reward the run's scorers give them (what
    training maximizes, not whether they are right), "accuracy": the mean of `evaluator`'s verdicts against the
    labels (tao_engine.rl.evaluators; default "numeric" with `extractor`), over the prompts that carry one}."""
    evaluator = evaluator if evaluator is not None else NumericEvaluator(extractor)
    sampling = SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens)
    contexts = contexts_by_key(records)
    for key in evaluator.label_keys:  # labels never reach the scorers
        contexts.pop(key, None)
    out = score(rollout(engine, [r.prompt for r in records], sampling), scorer, contexts)
    values = [s for group in out.rewards or [] for s in group if s is not None]
    metrics = {"score": sum(values) / len(values) if values else math.nan}
    labeled = [i for i, r in enumerate(records) if evaluator.problem(r.context) is None]
    if labeled:
        texts = [group[0] for group in out.completion_texts]
        metrics["accuracy"] = sum(evaluator.score(texts[i], records[i].context) for i in labeled) / len(labeled)
    return metrics
