"""Write every quality-suite task's splits as JSONL (deterministic: the same seed gives the same bytes):
<out>/<task>/{train,probe,test}.jsonl, plus the table_sql databases. Each line is a chat ("messages"), context
keys the scorers may read (source, passage, db_path, question, ...) and the labels ("answer" or "gold_sql"), which
`bench.quality.records.split_labels` moves out of reach of every label-free method.

The contrast tasks (the earlier benchmark's sql and math) keep their train/test files; their probe split is the
last PROBE_FROM_TRAIN training questions, taken out of their training split."""

from __future__ import annotations

from pathlib import Path

from bench.quality import task_arith, task_extract, task_passage_qa, task_table_sql
from bench.quality.build_datasets import write_jsonl
from bench.quality.splits import Splits

PROBE_FROM_TRAIN = 32


def _write_splits(out: Path, task: str, splits: Splits) -> dict[str, Path]:
    return {f"{task}_{name}": write_jsonl(out / task / f"{name}.jsonl", getattr(splits, name))
            for name in ("train", "probe", "test")}


def build_suite_datasets(out_dir: Path, seed: int = 0, contrast: bool = True) -> dict[str, Path]:
    out_dir = Path(out_dir).resolve()
    paths: dict[str, Path] = {}
    paths.update(_write_splits(out_dir, "extract", task_extract.generate(seed)))
    paths.update(_write_splits(out_dir, "arith", task_arith.generate(seed)))
    paths.update(_write_splits(out_dir, "passage_qa", task_passage_qa.generate(seed)))
    dbs = task_table_sql.build_databases(out_dir / "table_sql" / "dbs", seed)
    paths.update(_write_splits(out_dir, "table_sql", task_table_sql.generate(dbs, seed)))
    if contrast:
        from bench.quality.build_datasets import build_datasets

        earlier = build_datasets(out_dir / "earlier", seed)
        for task in ("sql", "math"):
            lines = earlier[f"{task}_train"].read_text(encoding="utf-8").splitlines(keepends=True)
            keep, probe = lines[:-PROBE_FROM_TRAIN], lines[-PROBE_FROM_TRAIN:]
            train = out_dir / task / "train.jsonl"
            train.parent.mkdir(parents=True, exist_ok=True)
            train.write_text("".join(keep), encoding="utf-8")
            (out_dir / task / "probe.jsonl").write_text("".join(probe), encoding="utf-8")
            paths.update({f"{task}_train": train, f"{task}_probe": out_dir / task / "probe.jsonl",
                          f"{task}_test": earlier[f"{task}_test"]})
    return paths
