"""One TAO step (P prompts x n samples: generate, score, update) with tao_engine vs TRL's GRPOTrainer (issue 7).

Same model (SmolLM2-135M-Instruct, full fine-tuning), batch, reward, optimizer and GRPO settings on the same CPU in
the same run (see tao_step_runners.py), in `--dtype` (default "auto": bf16 weights with fp32 master weights where the
CPU computes bf16 natively, TRL then with bf16=True; float32 elsewhere, both sides). Two rows: short prompts, and
long prompts (a ~1,000-token document followed by a question) where tao_engine's shared-prompt update (each prompt
forwarded once for its n completions) should widen the gap. Times are the median of --steps (>= 3) steps after one
warm-up step; tao_engine reports each phase, TRL its whole step. Each provider and row runs in a fresh child process
(bench/isolated.py), which also measures peak memory: the resident-set high-water mark (VmHWM) of the whole process,
and its growth over the loaded model during the steps. A provider that is not installed (TRL is optional,
`pip install .[bench]`), crashes or outlives --child-timeout is a row saying so, and the rest of the run completes.
Run: .venv/bin/python bench/bench_tao_step.py [--steps 3] [--prompts 8] [--n 8] [--max-tokens 64] [--dtype auto]
     [--long-context-tokens 1000] [--providers tao,trl] [--skip-long | --skip-short] [--long-tokens-per-backward 2048]
     [--child-timeout 3600] [--threads N]

Memory: the short row backpropagates the whole batch at once on both sides. The long row cannot (P x n sequences of
~1,000 tokens in one fp32 backward hold tens of GiB of activations, more than the 24 GiB development machine has),
so both sides backpropagate at most --long-tokens-per-backward tokens at a time and accumulate gradients over the
batch: tao_engine through its token budget per forward (whole prompt groups: one ~1,500-token group per backward at
the default), TRL through per_device_train_batch_size = the sequences that fit that budget, with gradient
accumulation and one generation of the whole batch per optimizer step, as in the short row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table  # noqa: E402
from isolated import ChildOutcome, report_missing, report_result, run_child  # noqa: E402

PROVIDERS = ("tao", "trl")
PHASES = ("generate_s", "score_s", "update_s")


def _child(args: argparse.Namespace) -> None:
    """Child process: run one provider on the prompts in --prompts-file, report one result (bench/isolated.py)."""
    import importlib.util

    import tao_step_runners
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe == "trl" and importlib.util.find_spec("trl") is None:
        report_missing("trl is not installed (pip install trl, or the `bench` extra)")
    prompts = json.loads(Path(args.prompts_file).read_text())
    run = tao_step_runners.run_tao if args.probe == "tao" else tao_step_runners.run_trl
    with tempfile.TemporaryDirectory() as tmp:
        args.trl_output_dir = tmp
        result = run(prompts, args)
    report_result(result)


def _run_child(args: argparse.Namespace, provider: str, prompts_file: Path, tokens_per_backward: int
               ) -> ChildOutcome:
    cmd = [sys.executable, __file__, "--probe", provider, "--prompts-file", str(prompts_file), "--steps",
           str(args.steps), "--prompts", str(args.prompts), "--n", str(args.n), "--max-tokens", str(args.max_tokens),
           "--tokens-per-backward", str(tokens_per_backward), "--dtype", args.dtype, "--threads", str(args.threads)]
    return run_child(cmd, args.child_timeout)


def _median(steps: list[dict[str, float]], key: str) -> float:
    timed = steps[1:] or steps  # the first step warms up
    return statistics.median(s[key] for s in timed)


def _row(label: str, provider: str, outcome: ChildOutcome) -> dict[str, object]:
    row: dict[str, object] = {"prompts": label, "provider": provider, "status": outcome.status}
    result = outcome.result
    if result is None:  # missing, crashed, hung or failed: the status says which
        return row
    steps = result["steps"]
    row["dtype"] = result.get("dtype", "-")
    row["step s"] = _median(steps, "total_s")
    for phase in PHASES:
        row[phase.removesuffix("_s") + " s"] = _median(steps, phase) if phase in steps[0] else "-"
    row["peak MiB"] = result["peak_mib"]
    row["step peak MiB"] = result["step_peak_mib"]
    # tokens of a timed step (tao_engine reports them): the work the step time buys, for a roofline reading
    for key in ("prompt_tokens", "completion_tokens"):
        row[key.replace("_", " ")] = _median(steps, key) if key in steps[0] else "-"
    return row


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step); at least 3")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=64, help="most completion tokens")
    parser.add_argument("--long-context-tokens", type=int, default=1000, help="document tokens per long prompt")
    parser.add_argument("--providers", default="tao,trl", help="comma-separated subset of tao,trl")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="auto: bf16 where the CPU has native bf16 (tao_engine.precision), else float32")
    parser.add_argument("--child-timeout", type=float, default=3600.0, help="seconds before a provider counts as hung")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads in each provider (0: torch's)")
    parser.add_argument("--skip-long", action="store_true", help="run the short-prompt row only")
    parser.add_argument("--skip-short", action="store_true", help="run the long-prompt row only")
    parser.add_argument("--long-tokens-per-backward", type=int, default=2048,
                        help="long row: most tokens per forward/backward (gradients accumulate over the batch)")
    parser.add_argument("--tokens-per-backward", type=int, default=0, help=argparse.SUPPRESS)  # 0 = whole batch
    parser.add_argument("--probe", choices=PROVIDERS, help=argparse.SUPPRESS)
    parser.add_argument("--prompts-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("steps", "prompts", "n", "max_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.probe is None and args.steps < 3:
        parser.error(f"--steps must be >= 3: the reported time is the median of the timed steps, got {args.steps}")
    if args.long_tokens_per_backward < 1:
        parser.error(f"--long-tokens-per-backward must be >= 1, got {args.long_tokens_per_backward}")
    if args.n < 2:
        parser.error("--n must be >= 2: GRPO needs at least two samples per prompt")
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    unknown = sorted(set(providers) - set(PROVIDERS))
    if unknown or not providers:
        parser.error(f"--providers: unknown {unknown}; choose from {list(PROVIDERS)}")
    args.provider_list = providers
    return args


def main() -> None:
    args = _parse()
    if args.probe is not None:
        return _child(args)
    providers = list(args.provider_list)
    from tao_step_setup import build_prompts

    from tao_engine.bundled import smollm2_dir
    from tao_engine.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(smollm2_dir())
    total = args.prompts * (args.steps + 1)
    rows_spec = ([] if args.skip_short else [("short", 0)]) + (
        [] if args.skip_long else [(f"long ~{args.long_context_tokens} tok", args.long_context_tokens)])
    if not rows_spec:
        raise SystemExit("bench_tao_step: --skip-short and --skip-long leave nothing to run")
    rows: list[dict[str, object]] = []
    ratios: dict[str, float] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, context_tokens in rows_spec:
            prompts_file = Path(tmp) / f"prompts_{context_tokens}.json"
            prompts_file.write_text(json.dumps(build_prompts(total, context_tokens, tokenizer)))
            budget = 0 if context_tokens == 0 else args.long_tokens_per_backward
            outcomes = {p: _run_child(args, p, prompts_file, budget) for p in providers}
            for provider, outcome in outcomes.items():
                rows.append(_row(label, provider, outcome))
            results = {p: o.result for p, o in outcomes.items() if o.result is not None}
            if "trl" in results:  # the callback's steps should cover trainer.train(): generation is inside a step
                covered = sum(s["total_s"] for s in results["trl"]["steps"]) / results["trl"]["train_wall_s"]
                notes.append(f"{label}: TRL's timed steps cover {covered:.0%} of trainer.train()'s wall time")
            key = "short" if context_tokens == 0 else "long"
            if {"tao", "trl"} <= set(results):
                tao_s = _median(results["tao"]["steps"], "total_s")
                trl_s = _median(results["trl"]["steps"], "total_s")
                ratios[f"{key} speedup trl/tao"] = trl_s / tao_s
                ratios[f"{key} peak memory tao/trl"] = results["tao"]["peak_mib"] / results["trl"]["peak_mib"]
            else:  # a side that did not finish: its status stands in for the ratio
                for provider in providers:
                    if outcomes[provider].result is None:
                        ratios[f"{key} {provider}"] = outcomes[provider].status
    from tao_engine.precision import choose_dtype

    choice = choose_dtype("cpu")
    print(f"CPU: {choice.reason if args.dtype == 'auto' else args.dtype + ' as asked'}")
    print(f"one TAO step: {args.prompts} prompts x {args.n} samples, <= {args.max_tokens} completion tokens, "
          f"SmolLM2-135M {args.dtype}, GRPO beta 0, median of {args.steps} steps after a warm-up; peak = process "
          "VmHWM, step peak = its growth over the loaded model during the steps; each provider in its own process")
    print_table(_uniform(rows))
    for note in notes:
        print(note)
    if "trl" not in providers:
        print("(TRL not run: no comparison ratios)")
    print_json_line("tao_step", rows, ratios)


def _uniform(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Every row with every column (a provider that did not finish has only its status), for the table."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    return [{k: row.get(k, "-") for k in keys} for row in rows]


if __name__ == "__main__":
    main()
