"""The readiness probe (tao_engine.rl.readiness) as a tuning run takes it: which prompts it draws, and their
candidates sampled with the run's engine, exploration and scorers, the engine's seed generator restored afterwards
so that probing does not change the run's samples. `TAO.probe` is the entry point.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from tao_engine.rl.evaluators import check_eval_labels
from tao_engine.rl.exploration.routing import TaskRouting
from tao_engine.rl.prompt_data import PromptRecord, load_prompts
from tao_engine.rl.readiness import ProbeReport, choose_prompts, run_probe, strip_labels
from tao_engine.rl.rollouts import Rollouts, rollout
from tao_engine.rl.tao_config import TAOConfig
from tao_engine.scoring.base import is_group_scorer

IsCorrect = Callable[[str, PromptRecord], bool]  # (completion, record) -> right


def probe_prompts(config: TAOConfig, evaluators: Mapping[str | None, Any], records: Sequence[PromptRecord] | None,
                  labeled: str | None, is_correct: IsCorrect | None,
                  training_prompts: Callable[[], list[PromptRecord]]) -> tuple[list[PromptRecord], IsCorrect | None]:
    """(the prompts to probe, the labeled check or None); the arguments as `TAO.probe` documents them.
    training_prompts: the run's [data] prompts, read only when neither records nor a labeled file are given."""
    labeled = labeled if labeled is not None else config.probe.labeled
    count = config.probe.prompts
    if is_correct is not None and records is not None and not labeled:
        return list(records)[:count], is_correct
    if labeled:
        chosen = load_prompts(labeled, config.data.system_prompt)[:count]
        check_eval_labels(chosen, labeled, evaluators)
        if is_correct is None:
            def is_correct(text: str, record: PromptRecord) -> bool:
                return evaluators.get(record.task, evaluators[None]).score(text, record.context) >= 1
        return chosen, is_correct
    pool = list(records) if records is not None else training_prompts()
    return choose_prompts(pool, count, config.run.seed), None


def probe_samples(config: TAOConfig, engine: Any, model: nn.Module, routing: TaskRouting,
                  chosen: list[PromptRecord], check: IsCorrect | None,
                  sample_and_score: Callable[[Sequence[PromptRecord], Any], Rollouts]) -> ProbeReport:
    """The probe of `chosen` (the labeled check `check` too, when given). sample_and_score(records, sampling): direct
    answers scored as the run scores them."""
    probe_seed = config.run.seed * 1_000_003 + 999_983
    sampling = dataclasses.replace(config.sampling, seed=probe_seed)
    saved = engine.generator.get_state()
    try:
        def sample(recs: Sequence[PromptRecord]) -> Rollouts:
            if routing.active and not routing.all_plain:  # the candidates exploration would train on
                return routing.rollout_and_score(engine, model, strip_labels(recs))
            return sample_and_score(strip_labels(recs), sampling)

        def greedy(recs: Sequence[PromptRecord]) -> list[str]:
            params = dataclasses.replace(config.sampling, n=1, temperature=0.0, seed=probe_seed)
            return [g[0] for g in rollout(engine, [r.prompt for r in recs], params).completion_texts]

        return run_probe(sample, chosen, config.guards, votes_matter=votes_matter(routing), is_correct=check,
                         greedy=greedy if check is not None else None)
    finally:
        engine.generator.set_state(saved)


def votes_matter(routing: TaskRouting) -> bool:
    """Whether a scorer of the run rewards agreement within a group (then the probe reports the vote's spread)."""
    return any(is_group_scorer(e.scorer) for scorer in routing.scorers.values() if scorer is not None
               for e in getattr(scorer, "entries", ()))
