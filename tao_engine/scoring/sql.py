"""SQL verifier: run each candidate's query on a SQLite database that it cannot change, and reward executing,
returning rows, and agreeing with the other candidates of its group on the result set.

Defence in depth, because the SQL comes from a model:
1. the file is opened read-only (`file:...?mode=ro` URI) and `PRAGMA query_only=ON` is set;
2. only one statement, starting with SELECT or WITH, is accepted (a fast, friendly rejection; not the guard);
3. the guard: an authorizer callback denies every action but reading tables, selecting, calling functions and
   recursive CTEs (so `WITH x AS (...) DELETE ...`, ATTACH, PRAGMA, load_extension are refused when compiled);
4. a progress handler aborts a query past its time limit (a never-ending recursive CTE, a huge cross join), rows
   are fetched up to a cap, and strings/blobs are capped in length (SQLITE_LIMIT_LENGTH).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tao_engine.scoring.base import Scores
from tao_engine.scoring.extract import get_extractor

_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                              sqlite3.SQLITE_RECURSIVE})
_DENIED_FUNCTIONS = frozenset({"load_extension"})
_MAX_VALUE_BYTES = 1_000_000  # longest string/blob a query may build (randomblob(1e12) fails fast instead)
_LITERALS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?(?:\*/|$)", re.DOTALL)


def _authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def _strip_literals(sql: str) -> str:
    """Comments out and string / quoted-identifier literals blanked, so keywords inside them do not count."""
    return _LITERALS.sub(lambda m: " " if m.group().startswith(("--", "/*")) else "''", sql)


def statement_error(sql: str) -> str | None:
    """Why `sql` is not a single SELECT/WITH statement, or None when it is."""
    code = _strip_literals(sql).strip().rstrip(";").strip()
    if not code:
        return "empty statement"
    if ";" in code:
        return "more than one statement"
    first = code.split(None, 1)[0].upper()
    if first not in ("SELECT", "WITH"):
        return f"only SELECT/WITH statements are allowed, got {first}"
    return None


def has_top_level_order_by(sql: str) -> bool:
    """Whether the outermost query sorts its result (an ORDER BY outside every parenthesis)."""
    code, depth, flat = _strip_literals(sql), 0, []
    for ch in code:
        depth += ch == "("
        flat.append(ch if depth == 0 else " ")
        depth -= ch == ")"
    return re.search(r"\border\s+by\b", "".join(flat), re.IGNORECASE) is not None


@dataclass(frozen=True)
class QueryResult:
    ok: bool  # ran to completion (or to the row cap)
    rows: tuple[tuple[Any, ...], ...] = ()
    truncated: bool = False  # stopped at the row cap
    error: str | None = None  # "timeout", "denied: ...", "rejected: ...", or sqlite's message
    ordered: bool = False  # the query has a top-level ORDER BY

    def result_key(self, ordered: bool) -> Any:
        """What two results must share to be equal: the rows as a list, or as a multiset when order is free."""
        rows = tuple(tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in self.rows)
        return (self.truncated, rows if ordered else frozenset(Counter(rows).items()))


def execute_readonly(db_path: str | Path, sql: str, time_limit_s: float = 1.0, max_rows: int = 1000) -> QueryResult:
    """Run one SELECT/WITH statement read-only. A bad query gives `ok=False` and an error; a missing database
    raises FileNotFoundError (a configuration error, not the candidate's)."""
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"SQL verifier: database {str(path)!r} does not exist")
    reason = statement_error(sql)
    if reason is not None:
        return QueryResult(ok=False, error=f"rejected: {reason}")
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=0.5, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only=ON")  # before the authorizer, which refuses every PRAGMA
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.set_authorizer(_authorize)
        deadline = time.monotonic() + time_limit_s
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)  # nonzero aborts the query
        try:
            cursor = conn.execute(sql)
            rows = cursor.fetchmany(max_rows + 1)
        except sqlite3.Error as exc:
            msg = str(exc)
            if "interrupted" in msg:
                return QueryResult(ok=False, error="timeout")
            return QueryResult(ok=False, error=f"denied: {msg}" if "not authorized" in msg else msg)
        except (ValueError, OverflowError, MemoryError) as exc:  # e.g. a value Python cannot convert
            return QueryResult(ok=False, error=f"{type(exc).__name__}: {exc}")
        return QueryResult(ok=True, rows=tuple(rows[:max_rows]), truncated=len(rows) > max_rows,
                           ordered=has_top_level_order_by(sql))
    finally:
        conn.close()


@dataclass
class SqlVerifier:
    """Group scorer: for each candidate, the weighted mean of three parts in [0, 1]:
    executes (ran without error), returns_rows (ran and gave at least one row), and agreement (the fraction of the
    group's OTHER candidates whose result set equals this one's; order counts only when both queries ORDER BY;
    left out for groups of one). The database is `db_path`, or per prompt the context key `db_path` (which wins)."""

    name: ClassVar[str] = "sql"
    db_path: str | None = None
    time_limit_s: float = 1.0
    max_rows: int = 1000
    executes_weight: float = 1.0
    rows_weight: float = 1.0
    agreement_weight: float = 1.0
    extract: str = "sql"  # extractor name: "sql" (```sql block or a bare SELECT/WITH), or "stripped"
    _counts: Counter = field(default_factory=Counter, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.time_limit_s > 0:
            raise ValueError(f"sql: time_limit_s must be > 0, got {self.time_limit_s!r}")
        if isinstance(self.max_rows, bool) or not isinstance(self.max_rows, int) or self.max_rows < 1:
            raise ValueError(f"sql: max_rows must be an int >= 1, got {self.max_rows!r}")
        weights = (self.executes_weight, self.rows_weight, self.agreement_weight)
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"sql: part weights must be >= 0 with a positive sum, got {weights}")
        self._extract = get_extractor(self.extract)

    def score_groups(self, prompts: Sequence[str], groups: Sequence[Sequence[str]], **context: Any) -> list[Scores]:
        db_paths = context.get("db_path")
        out = []
        for i, group in enumerate(groups):
            db = db_paths[i] if db_paths is not None else self.db_path
            if db is None:
                raise ValueError("sql: no database: set the scorer's db_path or pass context db_path=[...]")
            out.append(self._score_group(db, group))
        return out

    def _score_group(self, db: str, group: Sequence[str]) -> Scores:
        results = []
        for completion in group:
            sql = self._extract(completion)
            if sql is None:
                self._counts["no_sql"] += 1
                results.append(QueryResult(ok=False, error="no SQL found"))
                continue
            results.append(execute_readonly(db, sql, self.time_limit_s, self.max_rows))
        for r in results:
            self._counts["candidates"] += 1
            self._counts["executes"] += r.ok
            self._counts["returns_rows"] += r.ok and bool(r.rows)
            self._counts["timeouts"] += r.error == "timeout"
            self._counts["denied"] += (r.error or "").startswith(("denied", "rejected"))
        scores: Scores = []
        for j, r in enumerate(results):
            parts = [(self.executes_weight, float(r.ok)), (self.rows_weight, float(r.ok and bool(r.rows)))]
            if len(results) > 1:
                agree = self._agreement(j, results)
                self._counts["agreement_sum"] += agree
                self._counts["agreement_n"] += 1
                parts.append((self.agreement_weight, agree))
            total = sum(w for w, _ in parts)
            scores.append(sum(w * v for w, v in parts) / total if total > 0 else 0.0)
        return scores

    @staticmethod
    def _agreement(j: int, results: Sequence[QueryResult]) -> float:
        me = results[j]
        if not me.ok:
            return 0.0
        same = 0
        for k, other in enumerate(results):
            if k != j and other.ok:
                ordered = me.ordered and other.ordered
                same += me.result_key(ordered) == other.result_key(ordered)
        return same / (len(results) - 1)

    def metrics(self) -> dict[str, float]:
        c, n = self._counts, max(self._counts["candidates"], 1)
        out = {"exec_rate": c["executes"] / n, "rows_rate": c["returns_rows"] / n, "timeouts": float(c["timeouts"]),
               "denied": float(c["denied"]), "no_sql": float(c["no_sql"])}
        if c["agreement_n"]:
            out["agreement"] = c["agreement_sum"] / c["agreement_n"]
        self._counts.clear()
        return out
