"""TAO on the training questions with label-free scoring only: the task's rule scorers, or the LLM judge on the
policy's own engine. Labels were split off before this point (`quality.records`) and the scorer is wrapped in
`LabelFreeScorer`, which refuses any call a label could reach.

Each step is the TAO loop's: `rollout` (the TAO object's engine, sampling the module being tuned) -> `score` (the
label-free composite) -> `train_step` (GRPO on LoRA). With an exploration strategy (bench/quality/exploration.py) the
first two are the loop's `routing.rollout_and_score`: explore, transform, score the direct responses. The bench
drives the steps itself, rather than `TAO.run`, to evaluate on the held-out split mid-run and to check every step's
rewards against the hidden gold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.quality.diagnostics import reward_diagnostics, summarize
from bench.quality.profiles import Profile
from bench.quality.records import Example, LabelFreeScorer
from bench.quality.tasks import Task
from bench.quality.tuning import build_tao, run_steps, train_stats, tuning_config
from tao_engine.rl.exploration.config import ExplorationConfig
from tao_engine.rl.prompt_data import contexts_by_key
from tao_engine.rl.rollouts import rollout
from tao_engine.rl.score_rollouts import score
from tao_engine.rl.trainer import train_step
from tao_engine.scoring.registry import build_composite

ALGORITHM = "grpo"


def run_tao(model: Any, tokenizer: Any, task: Task, train: Sequence[Example], test: Sequence[Example],
            profile: Profile, n: int, seed: int, run_dir: str, judge: bool, curve: bool,
            adapter_dir: str | None = None, exploration: ExplorationConfig | None = None) -> dict[str, Any]:
    config = tuning_config(profile, task, ALGORITHM, n=n, seed=seed, run_dir=run_dir, exploration=exploration)
    gold_sql = [ex.gold.get("gold_sql", "") for ex in (*train, *test)]
    guard = LabelFreeScorer(build_composite(list(task.rule_scorers)), gold_sql)
    tao = build_tao(config, model, tokenizer, guard)
    if judge:  # the judge needs the TAO object's engine: the same module judges what it generates
        guard.scorer = build_composite(list(task.judge_scorers(tao.engine, profile.judge_max_tokens)))

    def step(_: int, chosen: Sequence[Example]) -> dict[str, Any]:
        if tao.routing.active:  # explore -> transform -> score, as TAO.run does (the guard is the routing's scorer)
            batch = tao.routing.rollout_and_score(tao.engine, tao.model, [ex.record for ex in chosen])
        else:
            batch = rollout(tao.engine, [ex.record.prompt for ex in chosen], config.sampling)
            batch = score(batch, guard, contexts_by_key([ex.record for ex in chosen]))
        diagnostics = reward_diagnostics(task, batch, chosen)  # the bench's gold, never the scorer's
        stats = train_step(tao.model, batch, tao.optimizer, tao.train_config, tao.reference, tao.lr_scheduler)
        scorer_metrics = {f"score/{k}": v for k, v in (batch.reward_metrics or {}).items()
                          if k.endswith(("/mean", "/zero_variance_frac", "/none_frac", "parse_failure_rate",
                                         "/reward_mean", "failed_frac"))}
        # generated tokens = what exploring cost (reasoning included); trained tokens = the direct responses'
        return {**train_stats(stats), **diagnostics, **scorer_metrics,
                "generated_tokens": batch.timing.num_completion_tokens, "rollout_s": batch.timing.seconds,
                "trained_tokens": sum(len(c) for g in batch.completion_token_ids for c in g)}

    out = run_steps(tao, task, train, test, profile, seed, step, curve=curve)
    out["diagnostics"] = summarize(out["history"])
    out["scorer_context_keys"] = sorted(guard.seen_keys)
    out["scorer_calls"] = guard.calls
    if adapter_dir is not None:
        from tao_engine.rl.lora_adapter import save_lora_adapter

        save_lora_adapter(tao.model, adapter_dir)
    return out
