"""Build the quality benchmark's datasets: four SQLite databases with text-to-SQL train/test questions, and math
word problems with train/test splits. Deterministic: the same seed gives byte-identical files.

    python bench/quality/build_datasets.py --out DIR [--seed 0]

writes DIR/sql/dbs/<db>.sqlite, DIR/sql/{train,test}.jsonl and DIR/math/{train,test}.jsonl (formats: see
sql_questions.sql_record and math_problems.math_record). The SQL lines carry the database's absolute path.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.quality` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.quality.math_problems import generate_problems, math_record  # noqa: E402
from bench.quality.sql_databases import DB_NAMES, build_database, schema_sql  # noqa: E402
from bench.quality.sql_questions import generate_questions, sql_record  # noqa: E402


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def build_datasets(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write every dataset file under `out_dir`; returns their paths by name: sql_train, sql_test, math_train,
    math_test (JSONL files) and sql_dbs_dir (the folder of <db>.sqlite files)."""
    out_dir = Path(out_dir).resolve()
    dbs_dir = out_dir / "sql" / "dbs"
    db_paths = {db: build_database(db, dbs_dir / f"{db}.sqlite", seed) for db in DB_NAMES}
    sql_train, sql_test = generate_questions(db_paths, seed)
    math_train, math_test = generate_problems(seed)
    schemas = {db: schema_sql(db) for db in DB_NAMES}
    return {
        "sql_train": write_jsonl(out_dir / "sql" / "train.jsonl",
                                  (sql_record(q, db_paths[q.db], schemas[q.db]) for q in sql_train)),
        "sql_test": write_jsonl(out_dir / "sql" / "test.jsonl",
                                 (sql_record(q, db_paths[q.db], schemas[q.db]) for q in sql_test)),
        "math_train": write_jsonl(out_dir / "math" / "train.jsonl", (math_record(p) for p in math_train)),
        "math_test": write_jsonl(out_dir / "math" / "test.jsonl", (math_record(p) for p in math_test)),
        "sql_dbs_dir": dbs_dir,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; files in it are replaced)")
    parser.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    args = parser.parse_args(argv)
    paths = build_datasets(args.out, args.seed)
    for name, path in paths.items():
        size = sum(1 for _ in path.open(encoding="utf-8")) if path.is_file() else len(list(path.glob("*.sqlite")))
        print(f"{name:12s} {path}  ({size} {'lines' if path.is_file() else 'databases'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
