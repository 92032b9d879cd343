"""One TAO step (P prompts x n samples: generate, score, update) with tao_engine vs TRL's GRPOTrainer (issue 7).

Same model (SmolLM2-135M-Instruct, fp32, full fine-tuning), batch, reward, optimizer and GRPO settings on the same
CPU in the same run (see tao_step_runners.py). Two rows: short prompts, and long prompts (a ~1,000-token document
followed by a question) where tao_engine's shared-prompt update (each prompt forwarded once for its n completions)
should widen the gap. Times are the median of --steps steps after one warm-up step; tao_engine reports each phase,
TRL its whole step. Each provider and row runs in a fresh child process, which also measures peak memory: the
resident-set high-water mark (VmHWM) of the whole process, and its growth over the loaded model during the steps.

TRL is optional (`pip install .[bench]`): without it the bench runs tao_engine alone and says so.
Run: .venv/bin/python bench/bench_tao_step.py [--steps 3] [--prompts 8] [--n 8] [--max-tokens 64]
     [--long-context-tokens 1000] [--providers tao,trl] [--skip-long | --skip-short] [--long-tokens-per-backward 2048]

Memory: the short row backpropagates the whole batch at once on both sides. The long row cannot (P x n sequences of
~1,000 tokens in one fp32 backward hold tens of GiB of activations, more than the 24 GiB development machine has),
so both sides backpropagate at most --long-tokens-per-backward tokens at a time and accumulate gradients over the
batch: tao_engine through its token budget per forward (whole prompt groups: one ~1,500-token group per backward at
the default), TRL through per_device_train_batch_size = the sequences that fit that budget, with gradient
accumulation and one generation of the whole batch per optimizer step, as in the short row.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table  # noqa: E402

PROVIDERS = ("tao", "trl")
PHASES = ("generate_s", "score_s", "update_s")


def _child(args: argparse.Namespace) -> None:
    """Child process: run one provider on the prompts in --prompts-file, print one JSON line."""
    import tao_step_runners

    prompts = json.loads(Path(args.prompts_file).read_text())
    run = tao_step_runners.run_tao if args.probe == "tao" else tao_step_runners.run_trl
    with tempfile.TemporaryDirectory() as tmp:
        args.trl_output_dir = tmp
        result = run(prompts, args)
    print("RESULT " + json.dumps(result))


def _run_child(args: argparse.Namespace, provider: str, prompts_file: Path, tokens_per_backward: int
               ) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--probe", provider, "--prompts-file", str(prompts_file), "--steps",
           str(args.steps), "--prompts", str(args.prompts), "--n", str(args.n), "--max-tokens", str(args.max_tokens),
           "--tokens-per-backward", str(tokens_per_backward)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"bench_tao_step: the {provider} child failed (exit {done.returncode}):\n"
                         f"{done.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def _median(steps: list[dict[str, float]], key: str) -> float:
    timed = steps[1:] or steps  # the first step warms up
    return statistics.median(s[key] for s in timed)


def _row(label: str, provider: str, result: dict[str, Any]) -> dict[str, object]:
    steps = result["steps"]
    row: dict[str, object] = {"prompts": label, "provider": provider, "step s": _median(steps, "total_s")}
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
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=64, help="most completion tokens")
    parser.add_argument("--long-context-tokens", type=int, default=1000, help="document tokens per long prompt")
    parser.add_argument("--providers", default="tao,trl", help="comma-separated subset of tao,trl")
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
    if "trl" in providers and importlib.util.find_spec("trl") is None:
        print("bench_tao_step: NOTE: trl is not installed (`pip install trl`, or the `bench` extra); running "
              "tao_engine alone, without the TRL comparison.")
        providers.remove("trl")
        if not providers:
            return
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
            results = {p: _run_child(args, p, prompts_file, budget) for p in providers}
            for provider, result in results.items():
                rows.append(_row(label, provider, result))
            if "trl" in results:  # the callback's steps should cover trainer.train(): generation is inside a step
                covered = sum(s["total_s"] for s in results["trl"]["steps"]) / results["trl"]["train_wall_s"]
                notes.append(f"{label}: TRL's timed steps cover {covered:.0%} of trainer.train()'s wall time")
            if {"tao", "trl"} <= set(results):
                key = "short" if context_tokens == 0 else "long"
                tao_s = _median(results["tao"]["steps"], "total_s")
                trl_s = _median(results["trl"]["steps"], "total_s")
                ratios[f"{key} speedup trl/tao"] = trl_s / tao_s
                ratios[f"{key} peak memory tao/trl"] = results["tao"]["peak_mib"] / results["trl"]["peak_mib"]
    print(f"one TAO step: {args.prompts} prompts x {args.n} samples, <= {args.max_tokens} completion tokens, "
          f"SmolLM2-135M fp32, GRPO beta 0, median of {args.steps} steps after a warm-up; peak = process VmHWM, "
          "step peak = its growth over the loaded model during the steps; each provider in its own process")
    print_table(rows)
    for note in notes:
        print(note)
    if "trl" not in providers:
        print("(TRL not run: no comparison ratios)")
    print_json_line("tao_step", rows, ratios)


if __name__ == "__main__":
    main()
