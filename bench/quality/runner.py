"""Run the planned cells (skipping the finished ones), then write the report: `run_benchmark` is what
bench/bench_quality.py calls, with the bundled SmolLM2 and the generated datasets; tests call it with a tiny model."""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.quality.cells import ModelFactory, cell_path, load_finished, plan_cells, run_cell, write_atomic
from bench.quality.plots import write_plots
from bench.quality.profiles import Profile
from bench.quality.records import Example, load_examples
from bench.quality.report import render, summary_ratios
from bench.quality.tasks import get_task


@dataclass
class BenchmarkResult:
    ran: list[str] = field(default_factory=list)  # cell keys run now
    skipped: list[str] = field(default_factory=list)  # cell keys already finished
    records: list[dict[str, Any]] = field(default_factory=list)  # every finished cell
    report: Path | None = None
    plots: list[Path] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)


def run_benchmark(
    profile: Profile,
    datasets: Mapping[str, Path],
    load_model: ModelFactory,
    tasks: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    work_dir: Path,
    out: Path,
    header: str = "# Quality benchmark",
    log=print,
) -> BenchmarkResult:
    """datasets: build_datasets' paths ("<task>_train", "<task>_test"). Cells run in plan order, each written to
    `work_dir/<profile>/cells/` when it ends; the report covers every finished cell of the work dir."""
    unknown = sorted(set(methods) - set(profile.methods))
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose among {list(profile.methods)}")
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    result = BenchmarkResult()
    work_dir = work_dir / profile.name  # a smoke run never passes for a finished cell of the full profile
    splits: dict[str, tuple[list[Example], list[Example]]] = {}
    for cell in plan_cells(profile, tasks, methods, seeds):
        path = cell_path(work_dir, cell)
        if path.is_file():
            result.skipped.append(cell.key)
            continue
        if cell.task not in splits:
            splits[cell.task] = (load_examples(datasets[f"{cell.task}_train"], profile.train_prompts),
                                 load_examples(datasets[f"{cell.task}_test"], profile.test_prompts))
        train, test = splits[cell.task]
        log(f"[bench-quality] {cell.key}: running ({len(train)} train / {len(test)} test questions)")
        start = time.perf_counter()
        record = run_cell(cell, get_task(cell.task), train, test, profile, load_model, work_dir, seeds[0])
        write_atomic(path, record)
        gc.collect()  # the cell's models and KV caches go before the next cell loads its own
        result.ran.append(cell.key)
        log(f"[bench-quality] {cell.key}: accuracy {record.get('eval', {}).get('accuracy', float('nan')):.3f} "
            f"in {time.perf_counter() - start:.0f}s")
    result.records = load_finished(work_dir)
    result.plots = write_plots(result.records, out, profile.rules_n, profile.judge_n)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(result.records, profile.rules_n, profile.judge_n, result.plots, header), encoding="utf-8")
    result.report = out
    result.ratios = summary_ratios(result.records, profile.rules_n)
    return result

