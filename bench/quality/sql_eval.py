"""Execution accuracy for the text-to-SQL benchmark: a predicted query is right when, run read-only on the
question's database, it returns the same rows as the gold query (as a multiset; in order only when the gold query
sorts its result at the top level). Floats are compared after rounding to 6 decimals, so `AVG(x)` matches
`SUM(x) * 1.0 / COUNT(x)`; integers equal floats of the same value (3 == 3.0)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tao_engine.scoring.extract import sql_block
from tao_engine.scoring.sql import execute_readonly, has_top_level_order_by

MAX_ROWS = 10_000  # far above any gold answer: a runaway prediction is cut off, and then cannot match


def extract_sql(text: str) -> str | None:
    """The SQL in a model reply: the last ```sql block, else an untagged block starting with SELECT/WITH, else a
    bare SELECT/WITH statement (tao_engine's `sql` extractor)."""
    return sql_block(text)


def _normalized(rows: tuple[tuple[Any, ...], ...]) -> list[tuple[Any, ...]]:
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]


def execution_match(db_path: str | Path, predicted_sql: str | None, gold_sql: str, time_limit_s: float = 2.0) -> bool:
    """Whether `predicted_sql` returns the gold query's result on `db_path`. A prediction that is missing, fails,
    is refused or times out is False; a gold query that fails raises ValueError (a broken dataset)."""
    gold = execute_readonly(db_path, gold_sql, time_limit_s=max(time_limit_s, 5.0), max_rows=MAX_ROWS)
    if not gold.ok or gold.truncated:
        raise ValueError(f"gold SQL does not run on {db_path} ({gold.error or 'too many rows'}): {gold_sql}")
    if not predicted_sql or not predicted_sql.strip():
        return False
    pred = execute_readonly(db_path, predicted_sql, time_limit_s=time_limit_s, max_rows=MAX_ROWS)
    if not pred.ok or pred.truncated:
        return False
    want, got = _normalized(gold.rows), _normalized(pred.rows)
    if has_top_level_order_by(gold_sql):
        return want == got
    return Counter(want) == Counter(got)
