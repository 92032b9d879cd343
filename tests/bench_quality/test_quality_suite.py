"""The quality suite (bench/bench_quality.py): its generated tasks are deterministic, split without overlap, and
checked by their own gold (the gold completion is right, a wrong one is not, the label-free scorers rate the gold
answer at their top); and the whole suite runs end to end on a tiny model (smoke profile, two worker processes):
every method gets its cell, quality.md and quality.json follow the issue's schema, and a second run resumes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from bench.quality.records import load_examples
from bench.quality.suite_cells import plan_suite_cells
from bench.quality.suite_datasets import build_suite_datasets
from bench.quality.suite_profiles import COMPLETE, FULL, SMOKE, SUITE_METHODS
from bench.quality.suite_runner import run_suite
from bench.quality.suite_tasks import COMPETENCE_TASKS, get_suite_task
from tao_engine.scoring.registry import build_composite
from tests.run_fixtures import tiny_model_dir


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    return build_suite_datasets(tmp_path_factory.mktemp("data"), seed=0, contrast=False)


def _digest(paths: dict[str, Path]) -> dict[str, str]:
    """Each split file's digest, with database paths reduced to their file names (the folder differs)."""
    out = {}
    for key, path in paths.items():
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            for row in rows:
                if "db_path" in row:
                    row["db_path"] = Path(row["db_path"]).name
            out[key] = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    return out


def test_datasets_are_deterministic_sized_and_disjoint(datasets, tmp_path):
    assert _digest(build_suite_datasets(tmp_path, seed=0, contrast=False)) == _digest(datasets)
    for task in COMPETENCE_TASKS:
        rows = {split: [json.loads(line) for line in datasets[f"{task}_{split}"].read_text().splitlines()]
                for split in ("train", "probe", "test")}
        assert {k: len(v) for k, v in rows.items()} == {"train": 400, "probe": 48, "test": 200}
        asked = {split: {json.dumps(r["messages"]) for r in v} for split, v in rows.items()}
        assert not asked["test"] & asked["train"] and not asked["test"] & asked["probe"], task
        assert not asked["probe"] & asked["train"], task


@pytest.mark.parametrize("task_name", COMPETENCE_TASKS)
def test_gold_completion_is_right_and_scored_at_the_top(datasets, task_name):
    task = get_suite_task(task_name)
    scorer = build_composite([dict(s) for s in task.scorers])
    for ex in load_examples(datasets[f"{task_name}_test"], 12):
        gold = task.gold_completion(ex.gold)
        assert task.is_correct(gold, ex.gold, ex.record.context), (task_name, gold)
        assert not task.is_correct("I do not know.", ex.gold, ex.record.context)
        context = {k: [v] for k, v in ex.record.context.items()}
        report = scorer.score_groups(["prompt"], [[gold, gold, "I do not know."]], **context)
        # every scorer that applies gives the gold answer its best value (arithmetic needs shown work: the gold
        # answer has none), and the combination ranks it above a non-answer
        for name, scores in report.per_scorer.items():
            if scores[0][0] is not None:
                assert scores[0][0] >= max(s for s in scores[0] if s is not None), name
        assert report.scores[0][0] > report.scores[0][2], task_name


def test_table_sql_gold_queries_run_and_answer_something(datasets):
    for ex in load_examples(datasets["table_sql_test"]):
        with sqlite3.connect(f"file:{ex.record.context['db_path']}?mode=ro", uri=True) as con:
            rows = con.execute(ex.gold["gold_sql"]).fetchall()
        assert rows and any(v is not None for row in rows for v in row)


def test_full_profile_plans_every_method_and_seed():
    cells = plan_suite_cells(FULL, SUITE_METHODS)
    keys = {c.key for c in cells}
    assert len(keys) == len(cells)
    for task in COMPETENCE_TASKS:
        assert f"{task}-probe-n8-seed0" in keys and f"{task}-speed-n1-seed0" in keys
        assert all(f"{task}-tao-n8-seed{s}" in keys and f"{task}-sft-n1-seed{s}" in keys for s in FULL.seeds)
        assert all(f"{task}-tao-n{n}-seed0" in keys for n in FULL.samples) and f"{task}-bon_sft-n8-seed0" in keys
        assert f"{task}-tao-n16-seed1" not in keys and f"{task}-bon_sft-n8-seed1" not in keys  # one seed there
    assert "multitask-multitask-n8-seed0" in keys and "multitask-multitask-n8-seed1" not in keys
    assert {"sql-probe-n8-seed0", "math-base-n1-seed0"} <= keys
    assert not any(k.startswith(("sql-sft", "math-bon_sft", "sql-speed", "sql-tao")) for k in keys)  # contrast
    complete = {c.key for c in plan_suite_cells(COMPLETE, SUITE_METHODS)}
    assert {"extract-tao-n16-seed2", "arith-bon_sft-n8-seed1", "multitask-multitask-n8-seed2", "sql-tao-n8-seed0"
            } <= complete


def test_smoke_suite_end_to_end_and_resume(datasets, tmp_path):
    model = tiny_model_dir(tmp_path / "model", max_context=1024)
    out = tmp_path / "results" / "quality.md"
    logs: list[str] = []
    first = run_suite(SMOKE, datasets, str(model), SUITE_METHODS, tmp_path / "work", out, "# smoke", workers=2,
                      log=logs.append)
    assert not first.failed, first.failed
    assert len(first.ran) == len(plan_suite_cells(SMOKE, SUITE_METHODS)) and not first.skipped
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["profile"] == "smoke" and report["cpu"]
    for task in SMOKE.tasks:
        row = report["tasks"][task]
        for key in ("base", "sft", "bon_sft", "tao", "tao_n", "multitask_tao", "probe_verdict",
                    "tuned_over_base_tok_s"):
            assert key in row, (task, key)
        assert set(row["tao_n"]) == {"2", "4"} and set(row["tao"]) == {"mean", "sd", "seeds"}
        assert row["probe_verdict"] in ("go", "weak", "no-go") and row["tuned_over_base_tok_s"] > 0
    text = out.read_text()
    assert "## Targets" in text and "## The readiness probe, per task" in text and "readiness probe:" in text
    assert {p.name for p in first.plots} == {"quality_curves.png", "quality_vs_samples.png"}
    second = run_suite(SMOKE, datasets, str(model), SUITE_METHODS, tmp_path / "work", out, "# smoke", workers=2,
                       log=logs.append)
    assert not second.ran and len(second.skipped) == len(first.ran)  # every cell resumed from its file
