"""The TAO loop: generate n candidates per unlabeled prompt, score them without labels, update the very module the
engine samples from, evaluate and keep, repeat. One copy of the weights, no sync step.

    tao = TAO(TAOConfig.from_toml("tao.toml"))
    result = tao.run()              # or tao.run(prompts=[...]) with prompts in hand

Each step: generate (`rollout`, engine) -> score (composite scorer) -> [DAPO: drop zero-variance groups, refill] ->
update (`train_step`) -> evaluate and keep (metrics line, [eval], [held-out score], [checkpoint]). The parts are
built by tao_builder.py; how they spread over processes (one, DDP, FSDP2) is the parallel strategy's business
(parallel_strategy.py), so the loop reads the same for all. A run resumes exactly from its latest checkpoint
(`run(resume=True)`): weights or adapter, optimizer, LR schedule, RNGs (the engine's seed generator included) and the
prompt cursor are restored, and the metrics log is cut back to the checkpoint's step.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from tao_engine.distributed.context import DistributedContext
from tao_engine.rl.evaluation import evaluate
from tao_engine.rl.evaluators import check_eval_labels
from tao_engine.rl.guards import HoldoutScore, holdout_score
from tao_engine.rl.interrupt import GracefulStop, TuneInterrupted
from tao_engine.rl.kv_budget import prompt_lengths, sized_engine_config
from tao_engine.rl.metrics_log import MetricsLog
from tao_engine.rl.prompt_data import (
    PromptCursor,
    PromptRecord,
    as_user_turns,
    contexts_by_key,
    keep_runnable,
    load_prompts,
)
from tao_engine.rl.readiness import ProbeReport
from tao_engine.rl.readiness.verdict import NO_GO
from tao_engine.rl.rng_state import capture_rng_state, restore_rng_state
from tao_engine.rl.rollouts import RolloutError, Rollouts, rollout
from tao_engine.rl.run_checkpoints import RunCheckpoints
from tao_engine.rl.run_dir import prepare_new_run_dir
from tao_engine.rl.score_rollouts import score
from tao_engine.rl.step_monitor import StepMonitor
from tao_engine.rl.tao_builder import build_parts
from tao_engine.rl.tao_config import TAOConfig
from tao_engine.rl.tao_probe import probe_prompts, probe_samples
from tao_engine.rl.trainer import train_step
from tao_engine.scoring.base import ScoringError


@dataclass
class TAOResult:
    run_dir: Path
    steps: int
    final_model_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics record per step
    eval_before: dict[str, float] | None = None
    eval_after: dict[str, float] | None = None
    plots: list[Path] = field(default_factory=list)
    skipped_prompts: list[str] = field(default_factory=list)  # "file:line: why" of prompts that cannot run
    used_prompts: list[PromptRecord] = field(default_factory=list)  # the records the steps drew (the same objects)
    probe: Any = None  # the readiness probe's ProbeReport when tune probed first
    stopped: str | None = None  # why a guard ended the run before run.steps
    best_step: int | None = None  # [guards] keep_best: the step whose checkpoint became final/


@dataclass
class _RunState:
    """What one run() carries from step to step."""

    records: list[PromptRecord]  # the training prompts (the held-out ones split off)
    holdout: list[PromptRecord]  # [guards] holdout_prompts
    eval_records: list[PromptRecord] | None
    cursor: PromptCursor
    log: MetricsLog  # rank 0's; the other ranks' logs write nothing
    result: TAOResult
    last_step: int = 0  # the last step done
    saved_step: int = 0  # the newest checkpoint's step


class TAO:
    """A tuning run. model/tokenizer/scorer may be given as objects (library use); otherwise built from config."""

    def __init__(
        self,
        config: TAOConfig,
        model: nn.Module | None = None,
        tokenizer: Any = None,
        scorer: Any = None,
        progress: bool = True,
        distributed: DistributedContext | None = None,
    ) -> None:
        """distributed: this process's place in a torchrun launch (None: a single process); see tao_engine.distributed.
        Each rank then rolls out and scores its slice of every step's prompts, gradients are summed across ranks, and
        only rank 0 writes metrics, checkpoints and the final model."""
        self.config = config
        # Times and peak memory of each phase (the metrics), and the bar; run() replaces it with one that shows.
        self.monitor = StepMonitor(1, 0, show=False, device=next(model.parameters()).device if model is not None
                                   else config.engine.device)
        parts = build_parts(config, model, tokenizer, scorer, distributed)
        self.model, self.tokenizer, self.reference = parts.model, parts.tokenizer, parts.reference
        self.strategy, self.scorer, self.routing = parts.strategy, parts.scorer, parts.routing
        self.optimizer, self.lr_scheduler, self.train_config = parts.optimizer, parts.lr_scheduler, parts.train_config
        self.guards, self.evaluators, self.prompt_rendering = parts.guards, parts.evaluators, parts.prompt_rendering
        self.progress = progress and self.strategy.writes_outputs  # one progress bar: rank 0's
        # The engine is built on first use: run() first sizes its KV cache for one step's batch (rl/kv_budget.py).
        self._engine: Any = None
        self._engine_config = config.engine
        self.run_dir = Path(config.run.output_dir)
        self.checkpoints = RunCheckpoints(config, self.model, self.tokenizer, self.optimizer, self.lr_scheduler,
                                          self.strategy, self.guards, lambda: self.engine)

    @property
    def engine(self) -> Any:
        """The engine that samples from `self.model` (the same module: no copy, no sync)."""
        if self._engine is None:
            from tao_engine.engine import Engine

            self._engine = Engine(self.model, self._engine_config, self.tokenizer)
        return self._engine

    # ---- the loop -------------------------------------------------------------------------------------------------

    def run(self, prompts: Sequence[PromptRecord | Any] | None = None, resume: bool = False,
            overwrite: bool = False, stop: GracefulStop | None = None) -> TAOResult:
        """resume: continue from the newest intact checkpoint in run.output_dir. Without it the directory must be
        empty, or `overwrite` replaces the run in it (tao_engine.rl.run_dir). stop: a signal handler's request to stop
        early (tao_engine.rl.interrupt): the run then checkpoints and raises TuneInterrupted naming the checkpoint
        (one process only: the ranks of a launch could stop at different steps)."""
        graceful = stop if self.strategy.decides_alone else None
        # A rank that fails tells the others, so they stop instead of waiting forever.
        return self.strategy.guarded(lambda: self._run(prompts, resume, overwrite, graceful), "tao run")

    def _run(self, prompts: Sequence[PromptRecord | Any] | None, resume: bool, overwrite: bool,
             graceful: GracefulStop | None) -> TAOResult:
        steps = self.config.run.steps
        if not resume and self.strategy.writes_outputs:  # before anything is written: one run per directory
            prepare_new_run_dir(self.run_dir, overwrite)
        run = self._start(prompts, resume)
        self.monitor = StepMonitor(steps, run.last_step, self.progress, self.monitor.memory.device)
        for step in range(run.last_step + 1, steps + 1):
            if graceful is not None and graceful.requested:
                break
            metrics, stop = self._guarded_step(run, step)  # generate, score, update
            stop = self._evaluate_and_keep(run, step, metrics, stop)
            if stop is not None:
                run.result.stopped = stop
                if self.strategy.writes_outputs:
                    print(f"tao: stopping after step {step}: {stop}", file=sys.stderr)
                break
        self.monitor.close()
        if graceful is not None and graceful.requested:  # asked to stop: keep what is done, skip eval and final/
            last = run.last_step
            saved = self.checkpoints.save(last, run.cursor) if last > run.saved_step else self.checkpoints.path(last)
            raise TuneInterrupted(f"{graceful.signal_name} after step {last}", last, saved if last else None)
        return self._finish(run)

    def _start(self, prompts: Sequence[PromptRecord | Any] | None, resume: bool) -> _RunState:
        """The run's prompts checked and split, the engine sized for them, the checkpoint resumed, and what comes
        before step 1 (the readiness probe, the eval before tuning)."""
        cfg = self.config
        records = self._user_turns(_as_records(prompts) if prompts is not None else _load_training_prompts(cfg))
        eval_records = self._user_turns(load_prompts(cfg.data.eval, cfg.data.system_prompt)) if cfg.data.eval else None
        self.routing.check_records(records)  # every prompt's task is configured: fail before any work
        self.routing.check_records(eval_records or [], "eval")
        if self._engine is None:  # a KV cache for one step's batch, not the engine's all-purpose default
            self._engine_config = sized_engine_config(cfg, self.model, prompt_lengths(records, self.tokenizer))
        # Every prompt fits prompt + max_tokens: an error naming file:line now, not a crash at step k.
        records, skipped = keep_runnable(records, self.engine, cfg.sampling.max_tokens, cfg.data.skip_failed)
        if eval_records is not None:
            check_eval_labels(eval_records, cfg.data.eval, self.evaluators)
            eval_max = cfg.run.eval_max_tokens or cfg.sampling.max_tokens
            eval_records, _ = keep_runnable(eval_records, self.engine, eval_max, skip=False, what="eval prompt")
        if skipped and self.strategy.writes_outputs:
            print(f"tao: skipping {len(skipped)} prompt(s) that cannot run ([data] skip_failed); the first: "
                  f"{skipped[0]}", file=sys.stderr)
        records, holdout = self.guards.split_holdout(records, cfg.run.seed)  # [guards] holdout_prompts
        run = _RunState(records, holdout, eval_records, PromptCursor(len(records), seed=cfg.run.seed,
                        shuffle=cfg.data.shuffle), self.strategy.metrics_log(self.run_dir),
                        TAOResult(self.run_dir, cfg.run.steps, self.run_dir / "final", skipped_prompts=skipped))
        if resume:
            run.last_step = run.saved_step = self.checkpoints.resume(run.cursor, run.log)
        if run.last_step == 0 and cfg.probe.before_tune and self.strategy.decides_alone:
            run.result.probe = self._probe_before_tuning(records)
        if eval_records is not None and run.last_step == 0:
            run.result.eval_before = self._evaluate(eval_records)
            run.log.log(0, {f"eval_{k}": v for k, v in run.result.eval_before.items()})
        return run

    def _guarded_step(self, run: _RunState, step: int) -> tuple[dict[str, Any], str | None]:
        """`_step`, with what a failure leaves behind made whole; (the run's metrics, why to stop or None), the same
        on every rank."""
        # What a checkpoint of the previous step holds, should this step be cut short: cursor, RNGs, updates.
        before, updates_before = run.cursor.state(), self.lr_scheduler.last_epoch
        rngs_before = capture_rng_state({"engine": self.engine.generator})
        self.monitor.start_step()
        try:
            metrics, stop = self._step(run.records, run.cursor, step)
        except KeyboardInterrupt:  # a second signal (or a Ctrl-C without a handler): the step is abandoned
            raise self._abandoned(step, run, (before, rngs_before), updates_before) from None
        except (RolloutError, ScoringError):  # before the update: keep the steps done so far, then stop
            if self.strategy.decides_alone and step - 1 > run.saved_step:
                self._rewind(run.cursor, before, rngs_before)
                path = self.checkpoints.save(step - 1, run.cursor)
                print(f"tao: step {step} failed; steps 1-{step - 1} are saved in {path}: fix the cause, then "
                      "continue with --resume", file=sys.stderr)
            raise
        return self.strategy.reduce_metrics(metrics), self.strategy.first_stop(stop)

    def _step(self, records: list[PromptRecord], cursor: PromptCursor, step: int) -> tuple[dict[str, Any], str | None]:
        """One TAO step: generate and score, [DAPO refill], guard, update. Returns (metrics, why a guard stops the
        run now or None)."""
        cfg = self.config
        batch = self._rollout_shard(records, cursor.take(cfg.data.prompts_per_step))
        rounds = 0
        # DAPO's dynamic sampling: groups whose candidates all score alike teach nothing; draw more prompts.
        while cfg.algorithm.dynamic_sampling and rounds < cfg.algorithm.max_resample_rounds:
            useful = _useful_groups(batch)
            num_useful = self.strategy.total(len(useful), "dynamic sampling: count useful groups")
            if num_useful >= cfg.data.prompts_per_step:
                break
            extra = self._rollout_shard(records, cursor.take(cfg.data.prompts_per_step - num_useful), like=batch)
            batch = batch.select(useful).concat(extra)
            rounds += 1
        batch, guard_metrics, stop = self.guards.apply(batch, step)
        with self.monitor.phase("update"):
            stats = train_step(self.model, batch, self.optimizer, self.guards.train_config(step, self.train_config),
                               self.reference, self.lr_scheduler, data_parallel=self.strategy.data_parallel,
                               on_micro_batch=self.monitor.micro_batch if self.monitor.shows_progress else None)
        # The engine's cached prompt KV was computed with the old weights. It notices in-place updates by tensor
        # version counters, which a fused optimizer kernel does not bump: say it, rather than rely on that.
        if stats.optimizer_steps:
            self.engine.weights_updated()
        generated = sum(len(c) for group in batch.completion_token_ids for c in group)
        return {
            **stats.as_dict(),
            **{f"score/{k}": v for k, v in (batch.reward_metrics or {}).items()},
            **guard_metrics,
            "resample_rounds": rounds,
            "generated_tokens": generated,
            "exploration_tokens_per_prompt": (batch.reward_metrics or {}).get(
                "exploration/tokens_per_prompt", generated / max(1, batch.num_prompts)),
            "generate_tok/s": generated / max(self.monitor.seconds("generate"), 1e-9),
            "completion_len_mean": generated / max(1, sum(len(g) for g in batch.completion_token_ids)),
        }, stop

    def _rollout_shard(self, records: list[PromptRecord], indices: list[int], like: Rollouts | None = None) -> Rollouts:
        """This rank's slice of `indices` rolled out and scored (all of them in a single process); like: the batch a
        refill extends."""
        return self.strategy.rollout(self.model, self.engine.generator, indices, self.config.sampling,
                                     lambda mine: self._rollout_and_score(records, mine), like)

    def _rollout_and_score(self, records: list[PromptRecord], indices: list[int]) -> Rollouts:
        # One path for every run: routing samples a single plain task with `rollout`, the others by exploration.
        return self.routing.rollout_and_score(
            self.engine, self.model, [records[i] for i in indices], skip_failed=self.config.data.skip_failed,
            on_progress=self.monitor.samples if self.monitor.shows_progress else None, phase=self.monitor.phase,
        )

    def _evaluate_and_keep(self, run: _RunState, step: int, metrics: dict[str, Any], stop: str | None) -> str | None:
        """[eval], the held-out score, the metrics line and a due checkpoint of a finished step; returns why the run
        stops now (a guard's stop or the held-out score's), or None."""
        cfg = self.config
        if run.eval_records is not None and cfg.run.eval_every and step % cfg.run.eval_every == 0:
            metrics.update({f"eval_{k}": v for k, v in self._evaluate(run.eval_records).items()})
        is_best = False
        if run.holdout and (self.guards.holdout_due(step) or step == cfg.run.steps):  # the last step competes too
            held, is_best, stopped = self.guards.record_holdout(step, self._holdout_score(run.holdout, step))
            metrics.update(held)
            stop = stop or stopped
        # step_s: the whole step; <phase>_s, <phase>_peak_mb beside
        metrics.update(self.strategy.reduce_metrics(self.monitor.step_metrics()))
        run.log.log(step, metrics)
        run.result.history.append({"step": step, **metrics})
        run.last_step = step
        due = cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0
        if step < cfg.run.steps and stop is None and (due or (is_best and cfg.guards.keep_best)):
            self.checkpoints.save(step, run.cursor)
            run.saved_step = step
        self.monitor.finish_step(metrics)
        return stop

    def _finish(self, run: _RunState) -> TAOResult:
        """After the last step: eval, the last checkpoint, and the final model (the best held-out step's with
        [guards] keep_best), merged for serving; the plots."""
        cfg, result = self.config, run.result
        if run.eval_records is not None:
            result.eval_after = self._evaluate(run.eval_records)
            if not (cfg.run.eval_every and cfg.run.steps % cfg.run.eval_every == 0):
                run.log.log(cfg.run.steps, {f"eval_{k}": v for k, v in result.eval_after.items()})
        self.checkpoints.save(run.last_step, run.cursor)
        result.steps = run.last_step
        result.used_prompts = [run.records[i] for i in run.cursor.seen()]
        if cfg.guards.keep_best and self.guards.best_step is not None:
            result.best_step = self.guards.best_step
            self.checkpoints.load_weights_of(result.best_step)  # final/ is the best held-out step, not the last one
        result.final_model_dir = self.checkpoints.save_final()
        result.plots = run.log.plot(("reward_mean", "eval_score", "eval_accuracy")) + run.log.plot_scorers()
        run.log.close()
        return result

    def _evaluate(self, eval_records: list[PromptRecord]) -> dict[str, float]:
        run = self.config.run
        max_tokens = run.eval_max_tokens or self.config.sampling.max_tokens
        with self.strategy.full_weights(self.model, "eval"), self.monitor.phase("eval", "evaluating"):
            if self.routing.tasks:  # per task and overall
                return self.routing.evaluate(self.engine, eval_records, self.evaluators, max_tokens)
            return evaluate(self.engine, eval_records, self.scorer, max_tokens=max_tokens,
                            evaluator=self.evaluators[None])

    def _sample_and_score(self, records: Sequence[PromptRecord], sampling: Any) -> Rollouts:
        """Direct answers to `records` sampled with `sampling` and scored as the run scores them (each task by its
        own scorer): what the held-out score and the probe measure, the inference-time behaviour."""
        with self.strategy.full_weights(self.model, "sample"):
            out = rollout(self.engine, [r.prompt for r in records], sampling, skip_failed=True)
            kept = [records[i] for i in out.prompt_indices]
            if self.routing.tasks:
                return self.routing.score_by_task(out, kept)
            return score(out, self.scorer, contexts_by_key(records))

    def _holdout_score(self, holdout: list[PromptRecord], step: int) -> HoldoutScore:
        with self.monitor.phase("holdout", "held-out scoring"):
            return holdout_score(self._sample_and_score, holdout, self.config.sampling, self.config.guards,
                                 seed=self.config.run.seed * 1_000_003 + step)

    def probe(self, records: Sequence[PromptRecord] | None = None, labeled: str | None = None,
              is_correct: Any = None) -> ProbeReport:
        """The readiness probe (tao_engine.rl.readiness) with this run's engine, sampling, exploration and scorers.

        records: the prompts to probe from (default: [data] prompts); `[probe] prompts` of them are drawn with the
        run's seed. labeled: a JSONL/CSV file of prompts with their "answer" (default: [probe] labeled); its prompts
        are probed instead, and pass@k, maj@k and the reward's pair accuracy are added. is_correct: (completion,
        record) -> bool for the labeled check (default: the run's eval_extractor against "answer"); given with
        `records` and no file, those records are the labeled probe set (label-free records: the check holds the
        labels), and the first `[probe] prompts` of them are probed. The engine's seed generator is restored
        afterwards: probing does not change the run's samples."""
        chosen, check = probe_prompts(self.config, self.evaluators, records, labeled, is_correct,
                                      lambda: _load_training_prompts(self.config))
        chosen = self._user_turns(chosen)
        if self._engine is None:  # probing alone (`tao-engine probe`): a KV cache for a step's batch, as run() does
            self._engine_config = sized_engine_config(self.config, self.model, prompt_lengths(chosen, self.tokenizer))
        return probe_samples(self.config, self.engine, self.model, self.routing, chosen, check, self._sample_and_score)

    def _user_turns(self, records: Sequence[PromptRecord]) -> list[PromptRecord]:
        """[data] chat_template: plain-text prompts as one user turn of the chat template (same objects otherwise)."""
        return as_user_turns(records, self.tokenizer, self.config.data.chat_template)

    def _probe_before_tuning(self, records: list[PromptRecord]) -> ProbeReport:
        report = self.probe(records)
        self.guards.set_probe_baseline(report.unlabeled["answer_entropy"])
        if self.strategy.writes_outputs:
            print(report.text(), file=sys.stderr)
            (self.run_dir / "probe.json").parent.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "probe.json").write_text(report.to_json() + "\n")
        if report.verdict.level == NO_GO and self.config.probe.on_no_go == "stop":
            raise ProbeNoGo(f"the readiness probe says no-go ([probe] on_no_go = \"stop\"):\n{report.verdict.text()}")
        return report


    # ---- a step cut short --------------------------------------------------------------------------------------------

    def _rewind(self, cursor: PromptCursor, before: dict[str, int], rngs: dict[str, Any]) -> None:
        """Back to the start of a step that did not change the weights: its prompts and random draws are undone, so
        a checkpoint of the previous step resumes exactly."""
        cursor.load_state(before)
        restore_rng_state(rngs, {"engine": self.engine.generator})
        self.optimizer.zero_grad(set_to_none=True)

    def _abandoned(self, step: int, run: _RunState, before: tuple[dict[str, int], dict[str, Any]],
                   updates_before: int) -> TuneInterrupted:
        """Step `step` was cut short. When it had not changed the weights yet (no optimizer step), the state from
        before it is whole: checkpoint it. Otherwise its update is half done and the last checkpoint stands."""
        untouched = self.lr_scheduler.last_epoch == updates_before
        if self.strategy.decides_alone and untouched and step - 1 > run.saved_step:
            self._rewind(run.cursor, *before)
            return TuneInterrupted(f"step {step} abandoned", step - 1, self.checkpoints.save(step - 1, run.cursor))
        half = "" if untouched else " during its update"
        kept = self.checkpoints.path(run.saved_step) if run.saved_step else None
        return TuneInterrupted(f"step {step} abandoned{half}", run.saved_step, kept)


class ProbeNoGo(RuntimeError):
    """The readiness probe said no-go and [probe] on_no_go = "stop": tuning did not start."""


# ---- helpers ------------------------------------------------------------------------------------------------------


def _load_training_prompts(config: TAOConfig) -> list[PromptRecord]:
    if not config.data.prompts:
        raise ValueError("tao config [data]: prompts is empty; give a JSONL or CSV file of prompts (or run(prompts=))")
    return load_prompts(config.data.prompts, config.data.system_prompt)


def _as_records(prompts: Sequence[Any]) -> list[PromptRecord]:
    if not prompts:
        raise ValueError("TAO.run: prompts is empty")
    return [p if isinstance(p, PromptRecord) else PromptRecord(p) for p in prompts]


def _useful_groups(batch: Rollouts) -> list[int]:
    out = []
    for g, rewards in enumerate(batch.rewards or []):
        values = [r for r in rewards if r is not None]
        if len(values) >= 2 and max(values) - min(values) > 0:
            out.append(g)
    return out
