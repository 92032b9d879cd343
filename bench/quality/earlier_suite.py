"""The earlier two-task benchmark (issue 9: text-to-SQL on multi-table databases and multi-step math, below
SmolLM2-135M's competence), kept runnable: `bench/bench_quality.py --suite earlier`. Its methods are base, SFT,
TAO with rule scorers at n = 2..16, TAO with the model as its own judge, reason / mixed exploration, and speed; its
report defaults to bench/results/quality-earlier.md so that the suite's report is not overwritten."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUT = Path("bench/results/quality-earlier.md")


def load_smollm2():
    from tao_engine.bundled import smollm2_dir
    from tao_engine.pretrained import load_pretrained

    return load_pretrained(smollm2_dir(), dtype="float32")


def main(args: argparse.Namespace) -> None:
    from bench.quality.build_datasets import build_datasets
    from bench.quality.profiles import METHODS, PROFILES
    from bench.quality.runner import run_benchmark
    from bench.quality.tasks import TASKS

    profile = PROFILES[args.profile]
    out = DEFAULT_OUT if args.out == Path("bench/results/quality.md") else args.out
    methods = [m for m in args.methods if m in METHODS] or list(METHODS)
    datasets = build_datasets(args.work_dir / "earlier-data", seed=0)
    header = (f"# Quality benchmark (earlier suite): TAO vs base vs SFT on SmolLM2-135M-Instruct\n\n"
              f"Profile `{profile.name}`: {profile.steps} optimizer steps x {profile.prompts_per_step} questions, "
              f"LoRA r={profile.lora_r}, lr {profile.lr}, {profile.test_prompts} test questions per task. "
              f"Command: `.venv/bin/python bench/bench_quality.py --suite earlier`.")
    result = run_benchmark(profile, datasets, load_smollm2, list(TASKS), methods, [0, 1],
                           args.work_dir / "earlier", out, header=header)
    print(f"report: {result.report}; cells run now: {len(result.ran)}, already done: {len(result.skipped)}")
