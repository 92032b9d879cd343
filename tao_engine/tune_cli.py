"""`tao-engine tune --config tao.toml [--section.field value ...] [--resume] [--from-table infer.sqlite]`: a TAO
run from the command line (with --from-table: one flywheel round on the inference table's unused prompts).

Every config field is also a flag: `--optim.lr 1e-5`, `--algorithm.name dapo`, `--sampling.n 16`, `--run.steps 50`
(values in TOML syntax; bare words are strings). Flags override the file; without --config the defaults apply.

Under torchrun (`torchrun --nproc-per-node K -m tao_engine tune ...`) every rank runs this command: the process group
is set up from the launcher's environment and `[distributed]`, and only rank 0 prints the summary.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path


def run_tune(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from tao_engine.distributed.context import DistributedContext, destroy_process_group, init_process_group
    from tao_engine.rl.tao_config import load_tao_config

    config = load_tao_config(args.config, extra)
    ctx = DistributedContext.from_env(config.distributed)
    if ctx is None:
        if getattr(args, "from_table", None):
            return _tune_from_table(args, config)
        return _tune(args, config, None, extra)
    if getattr(args, "from_table", None):
        raise ValueError("tune: --from-table runs in one process; launch it without torchrun")
    init_process_group(ctx)
    try:
        return _tune(args, config, ctx, extra)
    finally:
        destroy_process_group()


def _tune(args: argparse.Namespace, config, ctx, extra: Sequence[str] = ()) -> int:
    from tao_engine.output_paths import check_output_dir
    from tao_engine.probe_cli import NO_GO_EXIT
    from tao_engine.rl.evaluators import explain_eval
    from tao_engine.rl.interrupt import GracefulStop, TuneInterrupted
    from tao_engine.rl.run_dir import prepare_new_run_dir
    from tao_engine.rl.tao import TAO, ProbeNoGo

    main = ctx is None or ctx.is_main
    resume, overwrite = args.resume, getattr(args, "overwrite", False)
    if resume and overwrite:
        raise ValueError("tune: --resume continues the run in run.output_dir, --overwrite replaces it; give one")
    if main:  # before the model loads: a bad or occupied output directory costs nothing yet
        check_output_dir(config.run.output_dir, "[run] output_dir")
        if not resume:
            prepare_new_run_dir(config.run.output_dir, overwrite)

    def build() -> TAO:
        return TAO(config, progress=not args.quiet and main, distributed=ctx)

    try:
        if ctx is None:
            tao = build()
        else:
            from tao_engine.distributed.exchange import run_guarded

            tao = run_guarded(ctx, build, "tao setup")  # a rank failing to load the model stops the others too
        if main:
            print(f"tao-engine tune: {tao.prompt_rendering}", file=sys.stderr)
        # One process: Ctrl-C / SIGTERM finish the step and checkpoint (ranks of a launch would disagree on the step).
        graceful = GracefulStop() if ctx is None else None
        with graceful.handling() if graceful is not None else nullcontext():
            result = tao.run(resume=resume, overwrite=overwrite, stop=graceful)
    except TuneInterrupted as exc:
        if main:
            _say_how_to_go_on(exc, config.run.output_dir, args, extra)
        return 130
    except KeyboardInterrupt:
        if main:
            _say_where_the_run_stands(config.run.output_dir)
        return 130
    except ProbeNoGo as exc:  # [probe] on_no_go = "stop": nothing was tuned
        print(f"tao-engine tune: {exc}", file=sys.stderr)
        return NO_GO_EXIT
    if not main:
        return 0
    last = result.history[-1] if result.history else {}
    summary = {
        "run_dir": str(result.run_dir),
        "final_model": str(result.final_model_dir),
        "steps": result.steps,
        "reward_first": result.history[0].get("reward_mean") if result.history else None,
        "reward_last": last.get("reward_mean"),
        "eval_before": result.eval_before,
        "eval_after": result.eval_after,
        "eval_explained": explain_eval(tao.evaluators) if result.eval_before or result.eval_after else None,
        # The tuning compute spent exploring: generated tokens per prompt (reasoning and drafts included), the mean
        # over steps; the tuned model answers directly, at the base model's cost.
        "exploration_tokens_per_prompt": _mean_of(result.history, "exploration_tokens_per_prompt"),
        "generated_tokens": sum(r.get("generated_tokens", 0) for r in result.history),
        "skipped_prompts": len(result.skipped_prompts),  # [data] skip_failed: prompts that cannot run
        "probe_verdict": result.probe.verdict.level if result.probe is not None else None,
        "stopped_early": result.stopped,  # a guard's reason, when one ended the run before run.steps
        "best_step": result.best_step,  # [guards] keep_best: the step whose weights final/ holds
        "plots": [str(p) for p in result.plots],
    }
    print(json.dumps(summary, indent=2))
    return 0


def _say_how_to_go_on(exc, run_dir: str, args: argparse.Namespace, extra: Sequence[str]) -> None:
    """After an interrupted tune: what holds the run, and the commands that resume it and export its model."""
    if exc.checkpoint is None:
        print(f"tao-engine tune: interrupted ({exc.why}); no step had finished, nothing to resume", file=sys.stderr)
        return
    again = ["tao-engine", "tune", *(["--config", args.config] if args.config else []), *extra, "--resume"]
    print(f"tao-engine tune: interrupted ({exc.why}); the run up to step {exc.step} is saved in {exc.checkpoint}\n"
          f"  resume:  {shlex.join(again)}\n"
          f"  export:  {shlex.join(['tao-engine', 'export', str(run_dir), '--step', str(exc.step)])}"
          f"   (the tuned model, adapters merged, in {Path(run_dir) / 'final'})", file=sys.stderr)


def _say_where_the_run_stands(run_dir: str) -> None:
    from tao_engine.rl.checkpoint import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    where = (f"checkpoint kept at {latest} (continue with --resume)" if latest is not None
             else f"no checkpoint was written yet in {run_dir}")
    print(f"tao-engine tune: interrupted; {where}", file=sys.stderr)


def _mean_of(history: Sequence[dict], key: str) -> float | None:
    values = [r[key] for r in history if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def _tune_from_table(args: argparse.Namespace, config) -> int:
    """One flywheel round: the prompts come from the inference table instead of [data] prompts."""
    from dataclasses import asdict

    from tao_engine.flywheel.rounds import round_from_table

    if args.resume:
        raise ValueError("tune: --resume does not apply to --from-table (a failed round is simply run again)")
    record = round_from_table(args.from_table, config, min_prompts=args.min_prompts, progress=not args.quiet)
    print(json.dumps(asdict(record), indent=2))
    return 0
