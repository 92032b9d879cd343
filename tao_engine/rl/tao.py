"""The TAO loop: generate n candidates per unlabeled prompt, score them without labels, update the very module the
engine samples from, repeat. One process, one copy of the weights, no sync step.

    tao = TAO(TAOConfig.from_toml("tao.toml"))
    result = tao.run()              # or tao.run(prompts=[...]) with prompts in hand

Each step: `rollout` (engine) -> `score` (composite scorer) -> [DAPO: drop zero-variance groups, refill] ->
`train_step` -> metrics line -> [eval] -> [checkpoint]. A run resumes exactly from its latest checkpoint
(`run(resume=True)`): weights or adapter, optimizer, LR schedule, RNGs (the engine's seed generator included) and the
prompt cursor are restored, and the metrics log is cut back to the checkpoint's step.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tao_engine.distributed.context import DistributedContext
from tao_engine.distributed.exchange import exchange, run_guarded
from tao_engine.distributed.gradient_sync import DataParallelUpdate, broadcast_parameters
from tao_engine.distributed.main_rank import metrics_log_for, writes_outputs
from tao_engine.distributed.reduce import reduce_metrics
from tao_engine.distributed.sharding import rollout_shard
from tao_engine.engine.prompts import plain_prompt_rendering
from tao_engine.rl.checkpoint import (
    Placement,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from tao_engine.rl.evaluation import evaluate
from tao_engine.rl.evaluators import check_eval_labels, evaluators_for
from tao_engine.rl.exploration.routing import TaskRouting
from tao_engine.rl.final_model import load_run_model, save_final_model
from tao_engine.rl.guards import HoldoutScore, RunGuards, holdout_score
from tao_engine.rl.guards.warmup import rule_scorer_labels
from tao_engine.rl.interrupt import GracefulStop, TuneInterrupted
from tao_engine.rl.kv_budget import prompt_lengths, sized_engine_config
from tao_engine.rl.metrics_log import MetricsLog
from tao_engine.rl.optim import build_optimizer, build_scheduler
from tao_engine.rl.prompt_data import (
    PromptCursor,
    PromptRecord,
    as_user_turns,
    contexts_by_key,
    keep_runnable,
    load_prompts,
)
from tao_engine.rl.readiness import ProbeReport, choose_prompts, run_probe, strip_labels
from tao_engine.rl.readiness.verdict import NO_GO
from tao_engine.rl.reference import frozen_copy
from tao_engine.rl.resume import load_newest_intact
from tao_engine.rl.rng_state import capture_rng_state, restore_rng_state
from tao_engine.rl.rollouts import RolloutError, Rollouts, rollout
from tao_engine.rl.run_dir import prepare_new_run_dir
from tao_engine.rl.score_rollouts import score
from tao_engine.rl.step_monitor import StepMonitor
from tao_engine.rl.tao_config import TAOConfig
from tao_engine.rl.trainer import TrainConfig, train_step
from tao_engine.scoring.base import ScoringError, is_group_scorer


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
        self.dist = distributed
        self.progress = progress and writes_outputs(distributed)  # one progress bar: rank 0's
        # Times and peak memory of each phase (the metrics), and the bar; run() replaces it with one that shows.
        self.monitor = StepMonitor(1, 0, show=False, device=next(model.parameters()).device if model is not None
                                   else config.engine.device)
        if model is None:
            model, tokenizer = load_run_model(config)
        self.model = model
        self.tokenizer = tokenizer
        if config.lora is not None:
            from tao_engine.rl.lora import apply_lora, has_lora

            if not has_lora(model):
                apply_lora(model, config.lora, generator=torch.Generator().manual_seed(config.run.seed))
        self.data_parallel: DataParallelUpdate | None = None
        self.sharded = distributed is not None and distributed.strategy == "fsdp2"
        # Under LoRA the base weights are the reference (train_step disables the adapters): no second copy.
        needs_copy = config.algorithm.needs_reference and config.lora is None
        self.reference = None
        if distributed is not None:  # replicas start identical; before the engine and the reference copy see them
            broadcast_parameters(distributed, model)
            self.data_parallel = DataParallelUpdate(distributed)
        if self.sharded:  # FSDP2: shard before the optimizer sees the parameters; the reference is sharded alike
            from tao_engine.distributed.fsdp import shard_model
            from tao_engine.distributed.sharded_update import ShardedUpdate

            self.reference = shard_model(frozen_copy(model), distributed) if needs_copy else None
            shard_model(model, distributed)
            self.data_parallel = ShardedUpdate(distributed)
        # With [tasks] that each list their scorers, the run-level [scoring] may be left out.
        needs_run_scorer = bool(config.scoring.scorers) or not config.tasks
        self.scorer = scorer if scorer is not None else (_build_scorer(config) if needs_run_scorer else None)
        # The engine is built on first use: run() first sizes its KV cache for one step's batch (rl/kv_budget.py).
        self._engine: Any = None
        self._engine_config = config.engine
        # Exploration strategies and per-task scorers (tao_engine.rl.exploration); inactive for a plain single task.
        self.routing = TaskRouting.from_config(
            config.exploration, config.tasks, config.scoring, config.sampling, self.scorer,
            config.train.max_tokens_per_forward, config.train.bf16_autocast,
        )
        self.optimizer = build_optimizer(model, config.optim)
        self.lr_scheduler = build_scheduler(self.optimizer, config.optim, max(1, config.run.steps))
        if needs_copy and not self.sharded:
            self.reference = frozen_copy(model)
        self.train_config = TrainConfig(
            algorithm=config.algorithm,
            loss_temperature=config.train.loss_temperature,
            shared_prompt=config.train.shared_prompt,
            max_tokens_per_forward=config.train.max_tokens_per_forward,
            gradient_checkpointing=config.train.gradient_checkpointing,
            bf16_autocast=config.train.bf16_autocast,
            max_grad_norm=config.optim.max_grad_norm,
            seed=config.run.seed,
        )
        self.run_dir = Path(config.run.output_dir)
        self.prompt_rendering = plain_prompt_rendering(tokenizer, config.data.chat_template,
                                                       "[data] chat_template = false", "[data] chat_template = true")
        rule_labels = {label for scorer in self.routing.scorers.values() if scorer is not None
                       for label in rule_scorer_labels(scorer)}
        self.guards = RunGuards(config.guards, rule_labels)
        # How eval (and labeled probe) replies are checked, per task (tao_engine.rl.evaluators).
        self.evaluators = evaluators_for(config.run.evaluator, config.run.eval_extractor, config.tasks)

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
        early (tao_engine.rl.interrupt): the run then checkpoints and raises TuneInterrupted naming the checkpoint."""
        if self.dist is not None:  # a rank that fails tells the others, so they stop instead of waiting forever
            return run_guarded(self.dist, lambda: self._run(prompts, resume, overwrite, None), "tao run")
        return self._run(prompts, resume, overwrite, stop)

    def _run(self, prompts: Sequence[PromptRecord | Any] | None, resume: bool, overwrite: bool,
             graceful: GracefulStop | None) -> TAOResult:
        cfg = self.config
        if not resume and writes_outputs(self.dist):  # before anything is written: one run per directory
            prepare_new_run_dir(self.run_dir, overwrite)
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
        if skipped and writes_outputs(self.dist):
            print(f"tao: skipping {len(skipped)} prompt(s) that cannot run ([data] skip_failed); the first: "
                  f"{skipped[0]}", file=sys.stderr)
        records, holdout = self.guards.split_holdout(records, cfg.run.seed)  # [guards] holdout_prompts
        cursor = PromptCursor(len(records), seed=cfg.run.seed, shuffle=cfg.data.shuffle)
        log = metrics_log_for(self.dist, self.run_dir)  # rank 0 writes; other ranks log nothing
        start_step = 0
        if resume:
            start_step = self._resume(cursor, log)
        result = TAOResult(self.run_dir, cfg.run.steps, self.run_dir / "final", skipped_prompts=skipped)
        if start_step == 0 and cfg.probe.before_tune and self.dist is None:  # one process: ranks would differ
            result.probe = self._probe_before_tuning(records)
        if eval_records is not None and start_step == 0:
            result.eval_before = self._evaluate(eval_records)
            log.log(0, {f"eval_{k}": v for k, v in result.eval_before.items()})
        self.monitor = StepMonitor(cfg.run.steps, start_step, self.progress, self.monitor.memory.device)
        saved_step = last_step = start_step
        for step in range(start_step + 1, cfg.run.steps + 1):
            if graceful is not None and graceful.requested:
                break
            # What a checkpoint of the previous step holds, should this step be cut short: cursor, RNGs, updates.
            before, updates_before = cursor.state(), self.lr_scheduler.last_epoch
            rngs_before = capture_rng_state({"engine": self.engine.generator})
            self.monitor.start_step()
            try:
                metrics, stop = self._step(records, cursor, step)
            except KeyboardInterrupt:  # a second signal (or a Ctrl-C without a handler): the step is abandoned
                raise self._abandoned(step, cursor, (before, rngs_before), saved_step, updates_before) from None
            except (RolloutError, ScoringError):  # before the update: keep the steps done so far, then stop
                if self.dist is None and step - 1 > saved_step:
                    self._rewind(cursor, before, rngs_before)
                    path = self._checkpoint(step - 1, cursor)
                    print(f"tao: step {step} failed; steps 1-{step - 1} are saved in {path}: fix the cause, then "
                          "continue with --resume", file=sys.stderr)
                raise
            if self.dist is not None:
                metrics = reduce_metrics(self.dist, metrics)  # one record for the run, the same on every rank
                # a guard on one rank's shard stops every rank, or none would return from the next collective
                stop = next((s for s in exchange(self.dist, stop, "guards: stop the run?") if s), None)
            if eval_records is not None and cfg.run.eval_every and step % cfg.run.eval_every == 0:
                metrics.update({f"eval_{k}": v for k, v in self._evaluate(eval_records).items()})
            is_best = False
            if holdout and (self.guards.holdout_due(step) or step == cfg.run.steps):  # the last step competes too
                held, is_best, stopped = self.guards.record_holdout(step, self._holdout_score(holdout, step))
                metrics.update(held)
                stop = stop or stopped
            phases = self.monitor.step_metrics()  # step_s: the whole step; <phase>_s, <phase>_peak_mb beside
            metrics.update(phases if self.dist is None else reduce_metrics(self.dist, phases))
            log.log(step, metrics)
            result.history.append({"step": step, **metrics})
            last_step = step
            due = cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0
            if step < cfg.run.steps and stop is None and (due or (is_best and cfg.guards.keep_best)):
                self._checkpoint(step, cursor)
                saved_step = step
            self.monitor.finish_step(metrics)
            if stop is not None:
                result.stopped = stop
                if writes_outputs(self.dist):
                    print(f"tao: stopping after step {step}: {stop}", file=sys.stderr)
                break
        self.monitor.close()
        if graceful is not None and graceful.requested:  # asked to stop: keep what is done, skip eval and final/
            saved = self._checkpoint(last_step, cursor) if last_step > saved_step else checkpoint_path(
                self.run_dir, last_step)
            raise TuneInterrupted(f"{graceful.signal_name} after step {last_step}", last_step,
                                  saved if last_step else None)
        if eval_records is not None:
            result.eval_after = self._evaluate(eval_records)
            if not (cfg.run.eval_every and cfg.run.steps % cfg.run.eval_every == 0):
                log.log(cfg.run.steps, {f"eval_{k}": v for k, v in result.eval_after.items()})
        self._checkpoint(last_step, cursor)
        result.steps = last_step
        result.used_prompts = [records[i] for i in cursor.seen()]
        if cfg.guards.keep_best and self.guards.best_step is not None:
            result.best_step = self.guards.best_step
            self._load_weights_of(result.best_step)  # final/ is the best held-out step, not the last one
        result.final_model_dir = self._save_final()
        result.plots = log.plot(("reward_mean", "eval_score", "eval_accuracy")) + log.plot_scorers()
        log.close()
        return result

    def _step(self, records: list[PromptRecord], cursor: PromptCursor, step: int) -> tuple[dict[str, Any], str | None]:
        """One TAO step: generate and score, [DAPO refill], guard, update. Returns (metrics, why a guard stops the
        run now or None)."""
        cfg = self.config
        batch = self._rollout_shard(records, cursor.take(cfg.data.prompts_per_step))
        rounds = 0
        # DAPO's dynamic sampling: groups whose candidates all score alike teach nothing; draw more prompts.
        while cfg.algorithm.dynamic_sampling and rounds < cfg.algorithm.max_resample_rounds:
            useful = _useful_groups(batch)
            num_useful = self._global_count(len(useful))
            if num_useful >= cfg.data.prompts_per_step:
                break
            extra = self._rollout_shard(records, cursor.take(cfg.data.prompts_per_step - num_useful), like=batch)
            batch = batch.select(useful).concat(extra)
            rounds += 1
        batch, guard_metrics, stop = self.guards.apply(batch, step)
        with self.monitor.phase("update"):
            stats = train_step(self.model, batch, self.optimizer, self.guards.train_config(step, self.train_config),
                               self.reference, self.lr_scheduler, data_parallel=self.data_parallel,
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
        """This rank's slice of `indices` rolled out and scored (all of them in a single process). The step's main
        batch splits evenly across ranks; a refill (`like`: the batch it extends) may not, and a rank may get none."""
        if self.dist is None:
            return self._rollout_and_score(records, indices)
        with self._full_weights("rollout"):  # FSDP2: every rank gathers, even one with no prompt in a refill
            out = rollout_shard(self.dist, self.engine.generator, indices, self.config.sampling,
                                lambda mine: self._rollout_and_score(records, mine), even=like is None)
        return out if out is not None or like is None else like.select([])

    def _full_weights(self, phase: str):
        """The model with its full weights for the engine, scorers and evaluation (FSDP2 gathers; else a no-op)."""
        return self.data_parallel.full_weights(self.model, phase) if self.data_parallel else nullcontext(self.model)

    def _global_count(self, count: int) -> int:
        if self.dist is None:
            return count
        return sum(exchange(self.dist, count, "dynamic sampling: count useful groups"))

    def _rollout_and_score(self, records: list[PromptRecord], indices: list[int]) -> Rollouts:
        # One path for every run: routing samples a single plain task with `rollout`, the others by exploration.
        return self.routing.rollout_and_score(
            self.engine, self.model, [records[i] for i in indices], skip_failed=self.config.data.skip_failed,
            on_progress=self.monitor.samples if self.monitor.shows_progress else None, phase=self.monitor.phase,
        )

    def _evaluate(self, eval_records: list[PromptRecord]) -> dict[str, float]:
        run = self.config.run
        max_tokens = run.eval_max_tokens or self.config.sampling.max_tokens
        with self._full_weights("eval"), self.monitor.phase("eval", "evaluating"):
            if self.routing.tasks:  # per task and overall
                return self.routing.evaluate(self.engine, eval_records, self.evaluators, max_tokens)
            return evaluate(self.engine, eval_records, self.scorer, max_tokens=max_tokens,
                            evaluator=self.evaluators[None])

    def _sample_and_score(self, records: Sequence[PromptRecord], sampling: Any) -> Rollouts:
        """Direct answers to `records` sampled with `sampling` and scored as the run scores them (each task by its
        own scorer): what the held-out score and the probe measure, the inference-time behaviour."""
        with self._full_weights("sample"):
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
        cfg = self.config
        labeled = labeled if labeled is not None else cfg.probe.labeled
        check = None
        if is_correct is not None and records is not None and not labeled:
            chosen, check = list(records)[: cfg.probe.prompts], is_correct
        elif labeled:
            chosen = load_prompts(labeled, cfg.data.system_prompt)[: cfg.probe.prompts]
            check_eval_labels(chosen, labeled, self.evaluators)
            if is_correct is None:
                def is_correct(text: str, record: PromptRecord) -> bool:
                    return self.evaluators.get(record.task, self.evaluators[None]).score(text, record.context) >= 1
            check = is_correct
        else:
            pool = list(records) if records is not None else _load_training_prompts(cfg)
            chosen = choose_prompts(pool, cfg.probe.prompts, cfg.run.seed)
        chosen = self._user_turns(chosen)
        if self._engine is None:  # probing alone (`tao-engine probe`): a KV cache for a step's batch, as run() does
            self._engine_config = sized_engine_config(cfg, self.model, prompt_lengths(chosen, self.tokenizer))
        probe_seed = cfg.run.seed * 1_000_003 + 999_983
        sampling = dataclasses.replace(cfg.sampling, seed=probe_seed)
        saved = self.engine.generator.get_state()
        try:
            def sample(recs: Sequence[PromptRecord]) -> Rollouts:
                if self.routing.active and not self.routing.all_plain:  # the candidates exploration would train on
                    return self.routing.rollout_and_score(self.engine, self.model, strip_labels(recs))
                return self._sample_and_score(strip_labels(recs), sampling)

            def greedy(recs: Sequence[PromptRecord]) -> list[str]:
                params = dataclasses.replace(cfg.sampling, n=1, temperature=0.0, seed=probe_seed)
                return [g[0] for g in rollout(self.engine, [r.prompt for r in recs], params).completion_texts]

            return run_probe(sample, chosen, cfg.guards, votes_matter=self._votes_matter(), is_correct=check,
                             greedy=greedy if check is not None else None)
        finally:
            self.engine.generator.set_state(saved)

    def _user_turns(self, records: Sequence[PromptRecord]) -> list[PromptRecord]:
        """[data] chat_template: plain-text prompts as one user turn of the chat template (same objects otherwise)."""
        return as_user_turns(records, self.tokenizer, self.config.data.chat_template)

    def _votes_matter(self) -> bool:
        return any(is_group_scorer(e.scorer) for scorer in self.routing.scorers.values() if scorer is not None
                   for e in getattr(scorer, "entries", ()))

    def _probe_before_tuning(self, records: list[PromptRecord]) -> ProbeReport:
        report = self.probe(records)
        self.guards.set_probe_baseline(report.unlabeled["answer_entropy"])
        if writes_outputs(self.dist):
            print(report.text(), file=sys.stderr)
            (self.run_dir / "probe.json").parent.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "probe.json").write_text(report.to_json() + "\n")
        if report.verdict.level == NO_GO and self.config.probe.on_no_go == "stop":
            raise ProbeNoGo(f"the readiness probe says no-go ([probe] on_no_go = \"stop\"):\n{report.verdict.text()}")
        return report

    # ---- checkpoints ----------------------------------------------------------------------------------------------

    def _rewind(self, cursor: PromptCursor, before: dict[str, int], rngs: dict[str, Any]) -> None:
        """Back to the start of a step that did not change the weights: its prompts and random draws are undone, so
        a checkpoint of the previous step resumes exactly."""
        cursor.load_state(before)
        restore_rng_state(rngs, {"engine": self.engine.generator})
        self.optimizer.zero_grad(set_to_none=True)

    def _abandoned(self, step: int, cursor: PromptCursor, before: tuple[dict[str, int], dict[str, Any]],
                   saved_step: int, updates_before: int) -> TuneInterrupted:
        """Step `step` was cut short. When it had not changed the weights yet (no optimizer step), the state from
        before it is whole: checkpoint it. Otherwise its update is half done and the last checkpoint stands."""
        if self.dist is None and self.lr_scheduler.last_epoch == updates_before and step - 1 > saved_step:
            self._rewind(cursor, *before)
            return TuneInterrupted(f"step {step} abandoned", step - 1, self._checkpoint(step - 1, cursor))
        half = "" if self.lr_scheduler.last_epoch == updates_before else " during its update"
        kept = checkpoint_path(self.run_dir, saved_step) if saved_step else None
        return TuneInterrupted(f"step {step} abandoned{half}", saved_step, kept)

    def _checkpoint(self, step: int, cursor: PromptCursor) -> Path:
        # Replicas hold the same full state and rank 0 writes it; FSDP2 ranks first gather their shards onto rank 0,
        # which writes the same files. Either way the checkpoint loads at any world size, with either strategy.
        model_state, optimizer_state = self._full_state("checkpoint")
        if not writes_outputs(self.dist):
            return checkpoint_path(self.run_dir, step)
        return save_checkpoint(
            self.run_dir, step, self.model, self.optimizer, self.lr_scheduler,
            generators={"engine": self.engine.generator}, data_cursor=cursor.state(), config=self.config.to_dict(),
            base_model_name_or_path=self.config.model.path, keep_last=self.config.run.keep_last,
            keep_steps=[self.guards.best_step] if self.guards.best_step is not None else [],
            model_state=model_state, optimizer_state=optimizer_state, run_state={"guards": self.guards.state()},
        )

    def _load_weights_of(self, step: int) -> None:
        """The model's weights (or adapters) from the checkpoint of `step`; the optimizer and RNGs stay."""
        load_checkpoint(checkpoint_path(self.run_dir, step), self.model, restore_rng=False, place=self._placement())
        self.engine.weights_updated()

    def _placement(self) -> Placement | None:
        """How a checkpoint's full tensors become this model's: FSDP2 ranks keep their shard; None: as they are."""
        if not self.sharded:
            return None
        from tao_engine.distributed.fsdp import shard_like, shard_optimizer_state

        return Placement(shard_like, shard_optimizer_state)

    def _full_state(self, phase: str, optimizer: bool = True) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """FSDP2: (model state dict, optimizer state dict) with full tensors on rank 0, gathered by every rank;
        (None, None) otherwise (the module and optimizer are whole: they are read as they are)."""
        if not self.sharded:
            return None, None
        from tao_engine.distributed.fsdp import full_optimizer_state, full_state_dict

        exchange(self.dist, None, f"{phase}: gather the state")  # a failed rank stops the others first
        # A LoRA checkpoint holds the adapters only; the final model needs everything (the base to merge into).
        adapters_only = optimizer and self.config.lora is not None
        states = full_state_dict(self.model, self.dist, (lambda name: ".lora_" in name) if adapters_only else None)
        return states, full_optimizer_state(self.optimizer, self.dist) if optimizer else None

    def _resume(self, cursor: PromptCursor, log: MetricsLog) -> int:
        """The step of the newest intact checkpoint, loaded (tao_engine.rl.resume); 0 when there is none yet."""
        place = self._placement()  # FSDP2: every rank reads the full files and keeps its own shard
        loaded = load_newest_intact(
            self.run_dir, self.config.to_dict(), TAOConfig().to_dict(), announce=writes_outputs(self.dist),
            load=lambda path: load_checkpoint(path, self.model, self.optimizer, self.lr_scheduler,
                                              generators={"engine": self.engine.generator}, place=place))
        if loaded is None:
            log.truncate_after(-1)  # nothing to resume: the run starts over, so does its log
            return 0
        cursor.load_state(loaded.data_cursor)
        self.guards.load_state(loaded.run_state.get("guards", {}), loaded.step)
        log.truncate_after(loaded.step)
        self.engine.weights_updated()  # the cached prompt KV predates the loaded weights
        return loaded.step

    def _save_final(self) -> Path:
        """The tuned model in HF layout, adapters merged, so it serves at the base model's cost (final_model.py)."""
        target = self.run_dir / "final"
        full, _ = self._full_state("final model", optimizer=False)  # FSDP2: gathered onto rank 0
        if not writes_outputs(self.dist):
            return target
        adapter = self.run_dir / "final_adapter" if self.config.lora is not None else None
        return save_final_model(self.model, self.tokenizer, target, adapter, self.config.model.path, full)


class ProbeNoGo(RuntimeError):
    """The readiness probe said no-go and [probe] on_no_go = "stop": tuning did not start."""


# ---- helpers ------------------------------------------------------------------------------------------------------


def _build_scorer(config: TAOConfig):
    from tao_engine.scoring.registry import build_composite

    if not config.scoring.scorers:
        raise ValueError("tao config [scoring]: give at least one [[scoring.scorers]] table (e.g. name = \"length\")")
    return build_composite(list(config.scoring.scorers), config.scoring.combine, config.scoring.on_error)


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

