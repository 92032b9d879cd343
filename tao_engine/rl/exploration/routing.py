"""`TaskRouting`: the TAO loop's generate-and-score stage, for a plain run, exploration strategies and several tasks.

Each prompt's `task` (None when no tasks are configured) selects its exploration and its scorer. A single task that
explores `plain` (the default run) is sampled by `rollout` and scored as it is: generation and scoring timed apart,
prompts that cannot run skipped when asked, no exploration metrics. A run whose tasks all explore `plain` also
samples with `rollout` (the engine's sampler log-probs); otherwise every prompt is explored by its task's strategy
and the candidates become one `Rollouts` under the inference-time prompts (`candidates_to_rollouts`, whose
docstring gives the off-policy choice). The choice is per run, not per batch, so
that batches joined by DAPO's refill always carry log-probs of the same kind. Rewards are computed task by task
with each task's scorer; failed candidates (transform found nothing, budget skipped) reach the scorers as empty
completions (so group scorers keep n per prompt) and their rewards are then set to None.

Metrics (in `reward_metrics`, logged by the loop under `score/`): `exploration/tokens_per_prompt` (generated tokens
spent exploring, per prompt), `exploration/candidates/<strategy>` (counts), `exploration/<strategy>/reward_mean`,
`exploration/failed_frac`, and with tasks `task/<name>/reward_mean`, `task/<name>/prompts` and each task's scorer
metrics under `task/<name>/`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.rl.exploration.candidate import Candidate
from tao_engine.rl.exploration.config import ExplorationConfig
from tao_engine.rl.exploration.explore import explore
from tao_engine.rl.exploration.tasks import TaskConfig, check_record_tasks
from tao_engine.rl.exploration.to_rollouts import candidates_to_rollouts
from tao_engine.rl.rollouts import RolloutError, Rollouts, rollout
from tao_engine.rl.score_rollouts import score


class TaskRouting:
    def __init__(
        self,
        explorations: Mapping[str | None, ExplorationConfig],
        scorers: Mapping[str | None, Any],
        sampling: SamplingParams,
        max_tokens_per_forward: int | None = 8192,
        bf16_autocast: bool = True,
    ) -> None:
        self.explorations = dict(explorations)
        self.scorers = dict(scorers)
        self.sampling = sampling
        self.max_tokens_per_forward = max_tokens_per_forward
        self.bf16_autocast = bf16_autocast
        self.tasks = sorted(t for t in self.explorations if t is not None)
        counts = {t: e.candidates_per_prompt(sampling.n) for t, e in self.explorations.items()}
        if len(set(counts.values())) > 1:
            raise ValueError(
                f"tao config: every task must give each prompt the same number of candidates (one update batch holds "
                f"them all), got {counts}; match the mixed entries' n to [sampling] n"
            )

    @classmethod
    def from_config(
        cls, exploration: ExplorationConfig, tasks: Mapping[str, TaskConfig], scoring: Any, sampling: SamplingParams,
        run_scorer: Any, max_tokens_per_forward: int | None = 8192, bf16_autocast: bool = True,
    ) -> TaskRouting:
        """scoring: the run's [scoring] section (its combine / on_error are the tasks' defaults); run_scorer: the
        run's scorer (None when [scoring] has none: every task must then list its own)."""
        if not tasks:
            return cls({None: exploration}, {None: run_scorer}, sampling, max_tokens_per_forward, bf16_autocast)
        from tao_engine.scoring.registry import build_composite

        explorations: dict[str | None, ExplorationConfig] = {}
        scorers: dict[str | None, Any] = {}
        for name, task in tasks.items():
            explorations[name] = exploration.with_overrides(task.exploration)
            if task.scorers:
                scorers[name] = build_composite(
                    list(task.scorers), task.combine or scoring.combine, task.on_error or scoring.on_error
                )
            elif run_scorer is not None:
                scorers[name] = run_scorer
            else:
                raise ValueError(f"tao config [tasks.{name}]: no scorers; give [[tasks.{name}.scorers]] or [scoring]")
        return cls(explorations, scorers, sampling, max_tokens_per_forward, bf16_autocast)

    @property
    def all_plain(self) -> bool:
        return all(e.strategy == "plain" for e in self.explorations.values())

    @property
    def active(self) -> bool:
        """False for a single plain task: `rollout_and_score` then samples with `rollout` and scores as it is."""
        return bool(self.tasks) or self.explorations[None].strategy != "plain"

    def check_records(self, records: Sequence[Any], what: str = "prompts") -> None:
        check_record_tasks(records, {t: True for t in self.tasks}, what)

    def rollout_and_score(
        self, engine: Any, model: Any, records: Sequence[Any], skip_failed: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
        phase: Callable[[str, str], AbstractContextManager[Any]] | None = None,
    ) -> Rollouts:
        """Explore every record's prompt by its task's strategy, then score each task's prompts with its scorer.

        phase(name, label): a context that times a stage (the loop's monitor): "generate" for exploring and its
        scoring, or, for a single plain task, "generate" and then "score". skip_failed, on_progress: `rollout`'s, for
        a single plain task."""
        phase = phase or _untimed
        if not self.active:
            return self._plain(engine, records, skip_failed, on_progress, phase)
        with phase("generate", "exploring"):
            return self._explore_and_score(engine, model, records)

    def _plain(self, engine: Any, records: Sequence[Any], skip_failed: bool, on_progress: Any, phase: Any) -> Rollouts:
        try:
            with phase("generate", "generating"):
                out = rollout(engine, [r.prompt for r in records], self.sampling, skip_failed=skip_failed,
                              on_progress=on_progress)
        except RolloutError as exc:  # name the prompt by file:line, not by its place in the batch
            where = getattr(records[exc.index], "source", None) if exc.index is not None else None
            raise RolloutError(f"{where}: {exc}" if where else str(exc), exc.index) from None
        from tao_engine.rl.prompt_data import contexts_by_key

        with phase("score", "scoring"):
            return score(out, self.scorers[None], contexts_by_key(records))

    def _explore_and_score(self, engine: Any, model: Any, records: Sequence[Any]) -> Rollouts:
        self.check_records(records)
        tasks = [getattr(r, "task", None) for r in records]
        prompts = [r.prompt for r in records]
        start = time.perf_counter()
        if self.all_plain:
            batch = rollout(engine, prompts, self.sampling)  # today's path: sampler log-probs from the engine
            spent = [sum(len(c) for c in group) for group in batch.completion_token_ids]
            strategies = [["plain"] * len(group) for group in batch.completion_token_ids]
            failed = [[False] * len(group) for group in batch.completion_token_ids]
        else:
            candidates: list[list[Candidate]] = [[] for _ in records]
            for task, rows in _rows_by_task(tasks).items():
                found = explore(engine, [prompts[i] for i in rows], self.explorations[task], self.sampling)
                for i, group in zip(rows, found, strict=True):
                    candidates[i] = group
            batch = candidates_to_rollouts(
                model, engine.tokenizer, _eos_id(engine), prompts, candidates, self.sampling,
                seconds=time.perf_counter() - start, max_tokens_per_forward=self.max_tokens_per_forward,
                bf16_autocast=self.bf16_autocast,
            )
            spent = [sum(c.tokens for c in group) for group in candidates]
            strategies = [[c.strategy for c in group] for group in candidates]
            failed = [[c.failed for c in group] for group in candidates]
        scored = self.score_by_task(batch, records)
        rewards = [[None if bad else r for r, bad in zip(row, f, strict=True)]
                   for row, f in zip(scored.rewards or [], failed, strict=True)]
        metrics = dict(scored.reward_metrics or {})
        metrics.update(_exploration_metrics(spent, strategies, failed, rewards))
        metrics.update(_task_metrics(tasks, rewards) if self.tasks else {})
        return dataclasses.replace(scored, rewards=rewards, reward_metrics=metrics)

    def score_by_task(self, batch: Rollouts, records: Sequence[Any]) -> Rollouts:
        """`batch` (the candidates of `records`, in order) scored task by task, each task's prompts by its own
        scorer; metrics prefixed task/<name>/."""
        from tao_engine.rl.prompt_data import contexts_by_key

        tasks = [getattr(r, "task", None) for r in records]
        parts: list[tuple[list[int], Rollouts]] = []
        metrics: dict[str, float] = {}
        for task, rows in _rows_by_task(tasks).items():
            scored = score(select_groups(batch, rows), self.scorers[task], contexts_by_key([records[i] for i in rows]))
            parts.append((rows, scored))
            prefix = "" if task is None else f"task/{task}/"
            metrics.update({f"{prefix}{k}": v for k, v in (scored.reward_metrics or {}).items()})
        # A task without a voting scorer has no answer keys: the others' keys stay, its rows get none.
        return dataclasses.replace(batch.put_scores(parts), reward_metrics=metrics)

    def evaluate(self, engine: Any, records: Sequence[Any], evaluators: Mapping[str | None, Any],
                 max_tokens: int) -> dict[str, float]:
        """Greedy direct answers, scored task by task, each checked by its task's evaluator (`evaluators`: task ->
        tao_engine.rl.evaluators evaluator, None the run's): `task/<name>/score|accuracy` and overall
        `score|accuracy` (means over prompts). Without tasks: `evaluate` as it is."""
        from tao_engine.rl.evaluation import evaluate

        self.check_records(records, "eval")
        tasks = [getattr(r, "task", None) for r in records]
        if not self.tasks:
            return evaluate(engine, records, self.scorers[None], max_tokens=max_tokens, evaluator=evaluators[None])
        out: dict[str, float] = {}
        totals: dict[str, list[float]] = {"score": [0.0, 0.0], "accuracy": [0.0, 0.0]}  # weighted sum, weight
        for task, rows in _rows_by_task(tasks).items():
            part = evaluate(engine, [records[i] for i in rows], self.scorers[task], max_tokens=max_tokens,
                            evaluator=evaluators.get(task, evaluators[None]))
            for key, value in part.items():
                out[f"task/{task}/{key}"] = value
                if key in totals and not math.isnan(value):
                    totals[key][0] += value * len(rows)
                    totals[key][1] += len(rows)
        for key, (total, weight) in totals.items():
            if weight:
                out[key] = total / weight
        out.setdefault("score", math.nan)
        return out


def _untimed(name: str, label: str) -> AbstractContextManager[None]:
    return nullcontext()


def select_groups(batch: Rollouts, rows: Sequence[int]) -> Rollouts:
    """The prompts `rows` of a batch (their candidates, ids and log-probs), unscored, indexed 0.. for `score`'s
    contexts."""
    return dataclasses.replace(batch.select(rows).without_scores(), prompt_indices=list(range(len(rows))))


def _rows_by_task(tasks: Sequence[str | None]) -> dict[str | None, list[int]]:
    out: dict[str | None, list[int]] = {}
    for i, task in enumerate(tasks):
        out.setdefault(task, []).append(i)
    return out


def _eos_id(engine: Any) -> int:
    tokenizer = engine.tokenizer
    eos = tokenizer.eos_token_id if tokenizer is not None else None
    if eos is None:
        ids = sorted(engine.eos_token_ids)
        if not ids:
            raise ValueError("exploration: the engine has no EOS token to end a transformed response with")
        eos = ids[0]
    return int(eos)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _exploration_metrics(spent, strategies, failed, rewards) -> dict[str, float]:
    flat = [(s, r) for ss, rs in zip(strategies, rewards, strict=True) for s, r in zip(ss, rs, strict=True)]
    out: dict[str, float] = {
        "exploration/tokens_per_prompt": _mean([float(x) for x in spent]),
        "exploration/failed_frac": _mean([float(f) for row in failed for f in row]),
    }
    for name in sorted({s for s, _ in flat}):
        out[f"exploration/candidates/{name}"] = float(sum(1 for s, _ in flat if s == name))
        out[f"exploration/{name}/reward_mean"] = _mean([r for s, r in flat if s == name and r is not None])
    return out


def _task_metrics(tasks: Sequence[str | None], rewards) -> dict[str, float]:
    out: dict[str, float] = {}
    for task, rows in _rows_by_task(tasks).items():
        out[f"task/{task}/reward_mean"] = _mean([r for i in rows for r in rewards[i] if r is not None])
        out[f"task/{task}/prompts"] = float(len(rows))
    return out
