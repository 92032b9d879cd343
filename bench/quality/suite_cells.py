"""The quality suite's unit of work and of resume: one cell = (task, method, n, seed), run on a fresh base model,
its record written as JSON under <work_dir>/cells/ the moment it ends; a later run skips finished cells. Cells are
independent, so `suite_runner` runs them in worker processes; the speed cells come last (they read the adapter the
seed-0 TAO cell of their task saved)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.quality.records import Example, load_examples
from bench.quality.suite_profiles import SuiteProfile
from bench.quality.suite_tasks import CONTRAST_TASKS, get_suite_task

MULTITASK = "multitask"  # the task name of the multi-task cells


@dataclass(frozen=True)
class SuiteCell:
    task: str  # a task name, or MULTITASK
    method: str
    n: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.task}-{self.method}-n{self.n}-seed{self.seed}"


def plan_suite_cells(profile: SuiteProfile, methods: Sequence[str]) -> list[SuiteCell]:
    """Every cell of the profile for `methods`; the probe first for each task (its verdict is given before any
    training), base and probe once per task (greedy and the probe's seed do not depend on the tuning seed)."""
    cells: list[SuiteCell] = []
    competence = [t for t in profile.tasks if t not in CONTRAST_TASKS]
    for task in profile.tasks:
        allowed = profile.contrast_methods if task in CONTRAST_TASKS else methods
        wanted = [m for m in methods if m in allowed]
        if "probe" in wanted:
            cells.append(SuiteCell(task, "probe", profile.n, 0))
        if "base" in wanted:
            cells.append(SuiteCell(task, "base", 1, 0))
        for seed in profile.seeds:
            if "sft" in wanted:
                cells.append(SuiteCell(task, "sft", 1, seed))
            if "bon_sft" in wanted and seed in profile.secondary_seeds:
                cells.append(SuiteCell(task, "bon_sft", profile.n, seed))
            if "tao" in wanted:
                cells.append(SuiteCell(task, "tao", profile.n, seed))
            if "tao_n" in wanted and seed in profile.scaling_seeds:
                cells.extend(SuiteCell(task, "tao", n, seed) for n in profile.samples if n != profile.n)
    if "multitask" in methods and len(competence) > 1:
        cells.extend(SuiteCell(MULTITASK, "multitask", profile.n, seed) for seed in profile.secondary_seeds)
    if "speed" in methods:
        cells.extend(SuiteCell(t, "speed", 1, profile.seeds[0]) for t in competence)
    return cells


def load_splits(paths: Mapping[str, Path], task: str, profile: SuiteProfile) -> tuple[list[Example], ...]:
    """(train, probe, evaluation) of a task, each record's context given a "qid" (task:split:line) the diagnostics
    key by. The evaluation split is the test split, or the probe split in a development run (eval_split "probe")."""
    out = []
    evaluation = ("test", profile.test_prompts) if profile.eval_split == "test" else ("probe", profile.probe_prompts)
    for split, limit in (("train", None), ("probe", profile.probe_prompts), evaluation):
        examples = load_examples(paths[f"{task}_{split}"], limit)
        out.append([dataclasses.replace(ex, record=dataclasses.replace(
            ex.record, context={**ex.record.context, "qid": f"{task}:{split}:{i}"})) for i, ex in enumerate(examples)])
    return tuple(out)


def adapter_dir(work_dir: Path, task: str, profile: SuiteProfile) -> Path:
    return work_dir / "adapters" / f"{task}-tao-n{profile.n}-seed{profile.seeds[0]}"


def run_suite_cell(cell: SuiteCell, profile: SuiteProfile, paths: Mapping[str, Path], model_path: str,
                   work_dir: Path) -> dict[str, Any]:
    """Run one cell on a fresh model loaded from `model_path` ("smollm2": the bundled model); returns its record."""
    from bench.quality import suite_methods as methods

    start, cpu_start = time.perf_counter(), time.process_time()

    def load_model():
        from tao_engine.pretrained import load_pretrained

        path = model_path
        if path == "smollm2":
            from tao_engine.bundled import smollm2_dir

            path = str(smollm2_dir())
        return load_pretrained(path, dtype="float32")

    model, tokenizer = load_model()
    names = ([t for t in profile.tasks if t not in CONTRAST_TASKS] if cell.task == MULTITASK else [cell.task])
    tasks = [get_suite_task(name) for name in names]
    splits = {name: load_splits(paths, name, profile) for name in names}
    run_dir = str(work_dir / "runs" / cell.key)
    if cell.method == "probe":
        out = methods.run_probe_cell(model, tokenizer, tasks[0], splits, profile, run_dir)
    elif cell.method == "base":
        out = methods.run_base(model, tokenizer, tasks[0], splits, profile)
    elif cell.method == "sft":
        out = methods.run_sft(model, tokenizer, tasks[0], splits, profile, cell.seed, run_dir)
    elif cell.method in ("tao", "bon_sft", "multitask"):
        keep = cell.method == "tao" and cell.n == profile.n and cell.seed == profile.seeds[0]
        out = methods.run_tuned(
            model, tokenizer, tasks, splits, profile, "bon_sft" if cell.method == "bon_sft" else "grpo", cell.n,
            cell.seed, run_dir, None if cell.method == "bon_sft" else profile.guards,
            adapter_dir=str(adapter_dir(work_dir, cell.task, profile)) if keep else None)
    elif cell.method == "speed":
        out = methods.run_speed(model, tokenizer, tasks[0], splits, profile, lambda: load_model(),
                                adapter_dir(work_dir, cell.task, profile))
    else:
        raise ValueError(f"unknown method {cell.method!r}")
    return {"task": cell.task, "method": cell.method, "n": cell.n, "seed": cell.seed, "profile": profile.name,
            "steps": profile.steps if cell.method in ("sft", "bon_sft", "tao", "multitask") else 0,
            "prompts_per_step": profile.prompts_per_step, "cell_s": time.perf_counter() - start,
            # CPU seconds of this process: on a shared machine, what the cell would take with a core to itself
            "cpu_s": time.process_time() - cpu_start, **out}
