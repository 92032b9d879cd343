"""Quality benchmark (issue 9): does TAO, with prompts only, beat the base model and match SFT on gold labels, and
does more tuning compute (samples per prompt) buy more quality at the same inference cost?

SmolLM2-135M-Instruct on two generated tasks (bench/quality/build_datasets.py): text-to-SQL on small SQLite
databases (execution accuracy) and arithmetic word problems (exact final answer). Methods, all on LoRA with the same
optimizer, schedule, steps and questions per step:
  base       greedy, prompted                      sft        NLL of the gold answers (labels)
  tao        GRPO, label-free rule scorers, n = 2, 4, 8, 16 samples per prompt (compute scaling; n = 8 is the row)
  tao_judge  GRPO, the same model as pointwise LLM judge (plus the format rule), n = 4
  speed      greedy tokens/s of base vs the tuned model (LoRA merged): the inference cost
Labels never reach TAO (quality/records.py strips them; its LabelFreeScorer refuses any call they could reach).
Every (task, method, n, seed) cell writes <work-dir>/<profile>/cells/<cell>.json when it ends; a re-run skips
finished cells, so the benchmark can be run in pieces (`--tasks sql`, then `--tasks math`) and resumes after an
interruption.

Budget (full profile: 6 steps x 4 questions, LoRA r=16, 48 SQL / 60 math test questions, 2 seeds), estimated for
the 2-core development CPU when quiet from measured pieces: generation ~165 tok/s with n samples, prefill ~500 tok/s,
a LoRA update ~6.5 s per 1k tokens; prompts measured at 339 tokens (SQL; the schema, shared by the prefix cache
within a batch) and 88 (math); completions assumed ~35 tokens (SQL, cap 64) and ~70 (math, cap 80).
  seconds per step, SQL / math:  TAO n=2: 15 / 10   n=4: 19 / 17   n=8: 26 / 31   n=16: 40 / 59
                                 TAO-judge n=4: 27 / 24 (16 judge calls of <= 24 tokens)   SFT: 10 / 2.5
  greedy eval of the test split: ~16 s (SQL) / ~25 s (math); 12 per seed and task (finals + curve points)
  per seed: SQL ~17 min, math ~20 min; speed cells ~1.5 min each; base ~0.5 min each; model loads ~3 s a cell
  total ~78 minutes (SQL ~37, math ~41), inside the 90-minute budget with ~12 minutes to spare.
The update cost is the least certain piece; if a run must be cut, `--tasks sql` and `--tasks math` run separately
and a re-run resumes. (The pieces could not be timed end to end while this was written: the shared CPU was loaded.)

Run: .venv/bin/python bench/bench_quality.py [--profile full|smoke] [--tasks sql,math] [--seeds 0,1]
     [--methods base,sft,tao,tao_judge,speed] [--out bench/results/quality.md] [--work-dir runs/bench-quality]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench/common.py, as every bench script
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the bench.quality package
from common import machine, print_json_line  # noqa: E402

from bench.quality.profiles import METHODS, PROFILES  # noqa: E402
from bench.quality.runner import run_benchmark  # noqa: E402
from bench.quality.tasks import TASKS  # noqa: E402


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--tasks", type=_csv, default=list(TASKS), help="comma-separated: sql,math")
    parser.add_argument("--seeds", type=lambda v: [int(s) for s in _csv(v)], default=[0, 1])
    parser.add_argument("--methods", type=_csv, default=list(METHODS), help=f"comma-separated among {METHODS}")
    parser.add_argument("--out", type=Path, default=Path("bench/results/quality.md"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-quality"))
    args = parser.parse_args(argv)
    bad = sorted(set(args.tasks) - set(TASKS))
    if bad:
        parser.error(f"--tasks: unknown {bad}; choose among {list(TASKS)}")
    return args


def load_smollm2():
    from tao_engine.bundled import smollm2_dir
    from tao_engine.pretrained import load_pretrained

    return load_pretrained(smollm2_dir(), dtype="float32")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from bench.quality.build_datasets import build_datasets

    profile = PROFILES[args.profile]
    datasets = build_datasets(args.work_dir / "data", seed=0)
    info = machine()
    header = (f"# Quality benchmark: TAO vs base vs SFT on SmolLM2-135M-Instruct\n\n"
              f"Profile `{profile.name}`: {profile.steps} optimizer steps x {profile.prompts_per_step} questions, "
              f"LoRA r={profile.lora_r}, lr {profile.lr}, {profile.test_prompts} test questions per task. "
              f"Machine: {info['cpu']}, {info['threads']} threads, torch {info['torch']}. "
              f"Command: `make bench-quality` (`.venv/bin/python bench/bench_quality.py`).")
    result = run_benchmark(profile, datasets, load_smollm2, args.tasks, args.methods, args.seeds, args.work_dir,
                           args.out, header=header)
    print(f"report: {result.report}; plots: {', '.join(str(p) for p in result.plots) or 'none'}; "
          f"cells run now: {len(result.ran)}, already done: {len(result.skipped)}")
    rows = [{"task": r["task"], "method": r["method"], "n": r["n"], "seed": r["seed"],
             "accuracy": r.get("eval", {}).get("accuracy"), "train_s": r.get("train_s")} for r in result.records]
    print_json_line("quality", rows, result.ratios)


if __name__ == "__main__":
    main()
