"""Quality benchmark (the TAO-quality issue): does TAO make SmolLM2-135M-Instruct better from unlabeled prompts
alone, on tasks inside its competence, and does the readiness probe say so before any training?

Tasks (bench/quality/suite_tasks.py; each generated in code, 400 unlabeled training prompts, a 48-question labeled
probe split, 200 labeled test questions): JSON extraction, arithmetic word problems, single-table text-to-SQL, short
answers about a passage; plus the earlier benchmark's SQL and math tasks as the below-competence contrast.
Methods (bench/quality/suite_methods.py): the probe's verdict before training, base, SFT on gold labels, best-of-N
SFT with label-free selection, TAO with the guards (3 seeds), TAO at n = 2, 4, 8, 16 (same steps), one multi-task
TAO run over all four tasks, and the inference cost of the tuned model. Labels reach only the test evaluation, the
probe's labeled statistics, SFT and the bench's diagnostics, never a scorer.

Every cell is resumable: finished cells are kept under --work-dir and skipped on a re-run. Cells run in --workers
processes of one thread each; speed cells last, alone.

Run: .venv/bin/python bench/bench_quality.py [--profile full|smoke] [--methods probe,base,...] [--workers 2]
     [--out bench/results/quality.md] [--work-dir runs/bench-quality] [--model smollm2]
The earlier two-task benchmark (issue 9) stays runnable: --suite earlier (its report: --out another file).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench/common.py, as every bench script
if __package__ in (None, ""):  # run as a script: the repository root makes the bench.quality package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # (imported by tests, `bench` is registered already)
from common import machine, print_json_line  # noqa: E402

from bench.quality.suite_profiles import SUITE_METHODS, SUITE_PROFILES  # noqa: E402


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("competence", "earlier"), default="competence")
    parser.add_argument("--profile", choices=sorted(SUITE_PROFILES), default="full")
    parser.add_argument("--methods", type=_csv, default=list(SUITE_METHODS),
                        help=f"comma-separated among {list(SUITE_METHODS)}")
    parser.add_argument("--tasks", type=_csv, default=None, help="comma-separated; default: the profile's "
                        f"({', '.join(SUITE_PROFILES['full'].tasks)} in the full profile)")
    parser.add_argument("--seeds", type=lambda v: tuple(int(s) for s in _csv(v)), default=None,
                        help="comma-separated tuning seeds; default: the profile's (0,1,2 in the full profile)")
    parser.add_argument("--workers", type=int, default=2, help="cells run at once (one process each)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/quality.md"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-quality"))
    parser.add_argument("--model", default="smollm2", help="an HF model directory, or smollm2 (the bundled model)")
    parser.add_argument("--dev", action="store_true", help="a development run: evaluate on the labeled probe split "
                        "instead of the test split (choose recipes here, never on test); its own cells, and its "
                        "report goes to <work-dir>-dev/quality-dev.md unless --out is given")
    args = parser.parse_args(argv)
    bad = sorted(set(args.methods) - set(SUITE_METHODS))
    if bad:
        parser.error(f"--methods: unknown {bad}; choose among {list(SUITE_METHODS)}")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.suite == "competence":
        from bench.quality.suite_tasks import COMPETENCE_TASKS, CONTRAST_TASKS

        known = (*COMPETENCE_TASKS, *CONTRAST_TASKS)
        if args.tasks is not None and sorted(set(args.tasks) - set(known)):
            parser.error(f"--tasks: unknown {sorted(set(args.tasks) - set(known))}; choose among {list(known)}")
        if args.seeds is not None and not args.seeds:
            parser.error("--seeds: give at least one seed")
    return args


def chosen_profile(args: argparse.Namespace):
    """The profile, narrowed to --tasks and --seeds when given (a piece of the suite; cells resume across pieces)."""
    import dataclasses

    profile = SUITE_PROFILES[args.profile]
    if args.tasks is not None:
        profile = dataclasses.replace(profile, tasks=tuple(args.tasks))
    if args.seeds is not None:
        profile = dataclasses.replace(profile, seeds=args.seeds,
                                      scaling_seeds=tuple(s for s in profile.scaling_seeds if s in args.seeds),
                                      secondary_seeds=tuple(s for s in profile.secondary_seeds if s in args.seeds))
    if args.dev:
        profile = dataclasses.replace(profile, name=f"{profile.name}-dev", eval_split="probe")
    return profile


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.suite == "earlier":
        from bench.quality import earlier_suite

        earlier_suite.main(args)
        return
    from bench.quality.suite_datasets import build_suite_datasets
    from bench.quality.suite_report import cpu_model
    from bench.quality.suite_runner import run_suite

    profile = chosen_profile(args)
    if args.dev and args.out == Path("bench/results/quality.md"):
        args.out = Path(f"{args.work_dir}-dev") / "quality-dev.md"
    paths = build_suite_datasets(args.work_dir / "data", seed=0, contrast=any(
        t in profile.tasks for t in ("sql", "math")))
    info = machine()
    start = time.time()
    header = (f"# Quality benchmark: TAO on SmolLM2-135M-Instruct, tasks inside and below its competence\n\n"
              f"Profile `{profile.name}`: {profile.steps} optimizer steps x {profile.prompts_per_step} prompts, "
              f"n = {profile.n}, LoRA r={profile.lora_r}, lr {profile.lr}, seeds {list(profile.seeds)}, "
              f"{profile.test_prompts} test questions per task. Guards of every TAO cell: {dict(profile.guards)}. "
              f"CPU: {cpu_model()}, torch {info['torch']}. Command: `make bench-quality` "
              f"(`.venv/bin/python bench/bench_quality.py --workers {args.workers}`).")
    result = run_suite(profile, paths, args.model, args.methods, args.work_dir, args.out, header, args.workers)
    print(f"report: {result.report}, {result.json_path}; plots: {', '.join(map(str, result.plots)) or 'none'}; "
          f"cells run now: {len(result.ran)}, already done: {len(result.skipped)}, failed: {len(result.failed)}; "
          f"wall {(time.time() - start) / 60:.1f} min")
    rows = [{"task": r["task"], "method": r["method"], "n": r["n"], "seed": r["seed"],
             "accuracy": (r.get("eval") or {}).get("accuracy"), "cell_s": r.get("cell_s")} for r in result.records]
    print_json_line("quality", rows, {})
    if result.failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
