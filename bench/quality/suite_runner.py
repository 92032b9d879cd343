"""Run the quality suite's cells (skipping finished ones) in worker processes, then write the report.

Cells are independent and SmolLM2-135M is small: on 2 cores two processes of one thread each keep both cores busy
through the decode steps and Python work that one process with two threads leaves half idle. The speed cells run
last, one at a time with every thread, so that nothing else runs while they time the base and tuned models.
"""

from __future__ import annotations

import concurrent.futures
import gc
import json
import multiprocessing
import os
import site
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.quality.cells import write_atomic
from bench.quality.suite_cells import SuiteCell, plan_suite_cells, run_suite_cell
from bench.quality.suite_profiles import SuiteProfile

REPO_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the `bench` package


@dataclass
class SuiteResult:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell key -> error
    records: list[dict[str, Any]] = field(default_factory=list)
    report: Path | None = None
    json_path: Path | None = None
    plots: list[Path] = field(default_factory=list)


def cell_file(work_dir: Path, cell: SuiteCell) -> Path:
    return work_dir / "cells" / f"{cell.key}.json"


def _in_worker(threads: int, cell: SuiteCell, profile: SuiteProfile, paths: Mapping[str, Path], model_path: str,
               work_dir: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    return run_suite_cell(cell, profile, paths, model_path, work_dir)


def run_suite(profile: SuiteProfile, paths: Mapping[str, Path], model_path: str, methods: Sequence[str],
              work_dir: Path, out: Path, header: str, workers: int = 2,
              log: Callable[[str], None] = print) -> SuiteResult:
    from bench.quality.suite_report import write_report

    work_dir = work_dir / profile.name  # a smoke run never passes for a finished cell of the full profile
    result = SuiteResult()
    cells = plan_suite_cells(profile, methods)
    todo = []
    for cell in cells:
        (result.skipped if cell_file(work_dir, cell).is_file() else todo).append(cell)
    result.skipped = [c.key for c in result.skipped]
    training = [c for c in todo if c.method != "speed"]
    timing = [c for c in todo if c.method == "speed"]
    cores = os.cpu_count() or 1
    # Longest first, so that the last cells of the pool do not leave a core idle for long.
    training.sort(key=lambda c: -_cost(c))
    if training:
        threads = max(1, cores // max(1, workers))
        _run_pool(training, workers, threads, profile, paths, model_path, work_dir, result, log)
    for cell in timing:
        _run_pool([cell], 1, cores, profile, paths, model_path, work_dir, result, log)
    result.records = [json.loads(p.read_text()) for p in sorted((work_dir / "cells").glob("*.json"))]
    result.report, result.json_path, result.plots = write_report(result.records, profile, out, header)
    return result


def _cost(cell: SuiteCell) -> float:
    """Rough relative cost, for ordering only."""
    if cell.method in ("tao", "bon_sft"):
        return 2.0 + cell.n / 4
    return {"multitask": 6.0, "sft": 1.0, "probe": 0.8, "base": 0.5}.get(cell.method, 0.1)


def _run_pool(cells: Sequence[SuiteCell], workers: int, threads: int, profile: SuiteProfile,
              paths: Mapping[str, Path], model_path: str, work_dir: Path, result: SuiteResult,
              log: Callable[[str], None]) -> None:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no torch state inherited
    # A worker unpickles _in_worker by importing `bench.quality`: the repository root is appended to its sys.path
    # (after site-packages, where an installed PyPI `kernels` stays first). The parent may not have it there: tests
    # register `bench` without the root on sys.path (tests/bench_quality/conftest.py).
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=site.addsitedir,
                                                initargs=(str(REPO_ROOT),)) as pool:
        started = {pool.submit(_in_worker, threads, cell, profile, paths, model_path, work_dir): (cell, time.time())
                   for cell in cells}
        for future in concurrent.futures.as_completed(started):
            cell, t0 = started[future]
            try:
                record = future.result()
            except Exception as exc:  # noqa: BLE001 - one broken cell is reported; the others still finish
                result.failed[cell.key] = f"{type(exc).__name__}: {exc}"
                log(f"[bench-quality] {cell.key}: FAILED: {type(exc).__name__}: {exc}")
                continue
            write_atomic(cell_file(work_dir, cell), record)
            result.ran.append(cell.key)
            accuracy = (record.get("eval") or {}).get("accuracy")
            shown = f"accuracy {accuracy:.3f}" if isinstance(accuracy, float) else record.get("probe", {}).get(
                "verdict", "done")
            log(f"[bench-quality] {cell.key}: {shown} in {record.get('cell_s', 0.0):.0f}s "
                f"({time.time() - t0:.0f}s since queued)")
            gc.collect()
