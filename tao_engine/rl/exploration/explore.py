"""`explore(engine, prompts, config, sampling)`: [P][n] candidates per prompt by the configured strategy.

`mixed` runs its entries one after another, each one batched engine pass over all prompts (a strategy at a
temperature with its own n). With `tokens_budget_per_prompt`, a prompt's entries share that many generated tokens:
each entry's max_tokens per generation is capped at remaining // (n x generations per candidate), so the budget can
never be overrun, and an entry that cannot give each of its candidates one token is skipped for that prompt. Skipped
candidates keep their slots (every prompt has the same number of candidates) with response None: reward None, no
training signal, the same as a failed transform.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tao_engine.engine.prompts import PromptLike
from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.rl.exploration.candidate import Candidate
from tao_engine.rl.exploration.config import ExplorationConfig
from tao_engine.rl.exploration.refine import explore_refine, refine_stages
from tao_engine.rl.exploration.strategies import explore_plain, explore_reason


def explore(
    engine: Any, prompts: Sequence[PromptLike], config: ExplorationConfig, sampling: SamplingParams
) -> list[list[Candidate]]:
    """Candidates for every prompt; `sampling` is the run's [sampling] (n, temperature, max_tokens, top_p, ...)."""
    prompts = list(prompts)
    if config.strategy == "mixed":
        return _explore_mixed(engine, prompts, config, sampling)
    params = _params(sampling, config, config.strategy)
    return run_strategy(config.strategy, engine, prompts, [params] * len(prompts), config)


def run_strategy(
    strategy: str, engine: Any, prompts: list[PromptLike], params: list[SamplingParams], config: ExplorationConfig
) -> list[list[Candidate]]:
    if strategy == "plain":
        return explore_plain(engine, prompts, params)
    if strategy == "reason":
        return explore_reason(engine, prompts, params, config)
    if strategy == "refine":
        return explore_refine(engine, prompts, params, config)
    raise ValueError(f"explore: unknown strategy {strategy!r}")


def _params(sampling: SamplingParams, config: ExplorationConfig, strategy: str) -> SamplingParams:
    # plain samples the inference-time prompt as [sampling] says; reason and refine may get a longer budget.
    if strategy == "plain" or config.max_tokens is None:
        return sampling
    return _with_max_tokens(sampling, config.max_tokens)


def _with_max_tokens(params: SamplingParams, max_tokens: int) -> SamplingParams:
    return dataclasses.replace(params, max_tokens=max_tokens, min_tokens=min(params.min_tokens, max_tokens))


def _explore_mixed(
    engine: Any, prompts: list[PromptLike], config: ExplorationConfig, sampling: SamplingParams
) -> list[list[Candidate]]:
    out: list[list[Candidate]] = [[] for _ in prompts]
    budget = config.tokens_budget_per_prompt
    remaining = [budget] * len(prompts)
    for entry in config.mixed:
        base = dataclasses.replace(_params(sampling, config, entry.strategy), n=entry.n, temperature=entry.temperature)
        stages = refine_stages(config.refine_rounds) if entry.strategy == "refine" else 1
        active: list[int] = []
        params: list[SamplingParams] = []
        for g, left in enumerate(remaining):
            cap = base.max_tokens if left is None else min(base.max_tokens, left // (entry.n * stages))
            if cap >= 1:
                active.append(g)
                params.append(_with_max_tokens(base, cap))
        found = run_strategy(entry.strategy, engine, [prompts[g] for g in active], params, config)
        by_prompt = dict(zip(active, found, strict=True))
        for g, prompt in enumerate(prompts):
            group = by_prompt.get(g)
            if group is None:
                group = [_skipped(entry.strategy, prompt, entry.temperature) for _ in range(entry.n)]
            elif remaining[g] is not None:
                remaining[g] -= sum(c.tokens for c in group)
            out[g].extend(group)
    return out


def _skipped(strategy: str, prompt: PromptLike, temperature: float) -> Candidate:
    return Candidate(
        strategy=strategy, exploration_prompt=prompt, raw_output="", response=None, tokens=0,
        temperature=temperature, finish_reason="budget", skipped=True,
    )
