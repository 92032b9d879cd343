"""SQL verifier ("sql"): run each candidate's query read-only on a SQLite database (tao_engine.scoring.sql_exec: its
guards, time limit, row and byte caps), reward executing, returning rows, agreeing with the group on the result set and
naming what the question asks about, and penalize the shapes that game those rewards (tao_engine.scoring.sql_shape:
`SELECT *`, always-true conditions, unselective results).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tao_engine.scoring.base import Scores
from tao_engine.scoring.extract import get_extractor
from tao_engine.scoring.sql_exec import (  # noqa: F401 - the execution API, importable from here as before
    DEFAULT_MAX_RESULT_BYTES,
    QueryResult,
    execute_readonly,
    has_top_level_order_by,
    statement_error,
)
from tao_engine.scoring.sql_shape import QueryShape, ShapeChecker, question_of, question_terms


@dataclass
class SqlVerifier:
    """Group scorer: the weighted mean of four parts in [0, 1] (runs, returns rows, agrees with the group, names the
    question's terms), less penalties for the shapes that game them, floored at 0:

    - executes: ran without error (within the time limit, row and byte caps);
    - returns_rows: ran and gave at least one row;
    - agreement: the fraction of the group's OTHER candidates whose result set equals this one's (compared by
      digest; order counts only when both queries ORDER BY); left out for groups of one;
    - relevance: the share of the question's terms the query names (tables, columns, values); left out when the
      question has none. The question is the context key `question` when given, else the prompt's last user message
      without its schema (tao_engine.scoring.sql_shape.question_of);
    - penalties, for queries that ran: `select_star_penalty` for `SELECT *`, `always_true_penalty` for a condition
      that cannot filter, `unselective_penalty` for a result over `max_row_fraction` of its largest table.

    The database is `db_path`, or per prompt the context key `db_path` (which wins)."""

    name: ClassVar[str] = "sql"
    db_path: str | None = None  # the SQLite file; a prompt's context key "db_path" wins
    time_limit_s: float = 1.0  # per query; past it the query counts as failed ("timeout")
    max_rows: int = 1000  # rows fetched per query; the result stops there
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES  # a bigger result fails ("too large")
    executes_weight: float = 1.0  # weight of the part: the query ran without error
    rows_weight: float = 1.0  # weight of the part: it returned at least one row
    agreement_weight: float = 1.0  # weight of the part: the share of the group with the same result set
    relevance_weight: float = 1.0  # weight of the part: the share of the question's terms the query names
    select_star_penalty: float = 0.25  # subtracted for SELECT *
    always_true_penalty: float = 0.5  # subtracted for a condition that keeps every row (1 = 1, x = x, LIKE '%'...)
    unselective_penalty: float = 0.25  # subtracted for a result holding over max_row_fraction of its largest table
    max_row_fraction: float = 0.5  # the unselective threshold
    extract: str = "sql"  # extractor name: "sql" (```sql block or a bare SELECT/WITH), or "stripped"
    _counts: Counter = field(default_factory=Counter, init=False, repr=False)

    def __post_init__(self) -> None:
        check_limits("sql", self.time_limit_s, self.max_rows, self.max_result_bytes)
        weights = (self.executes_weight, self.rows_weight, self.agreement_weight, self.relevance_weight)
        if any(not _is_number(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"sql: part weights must be numbers >= 0 with a positive sum, got {weights}")
        for name in ("select_star_penalty", "always_true_penalty", "unselective_penalty"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"sql: {name} must be in [0, 1], got {value!r}")
        try:
            self._shapes = ShapeChecker(self.max_row_fraction, self.time_limit_s)
        except ValueError as exc:
            raise ValueError(f"sql: {exc}") from None
        self._extract = get_extractor(self.extract)

    def score_groups(self, prompts: Sequence[str], groups: Sequence[Sequence[str]], **context: Any) -> list[Scores]:
        questions = context.get("question")
        messages = context.get("prompt_messages")
        out = []
        for i, (db, group) in enumerate(zip(group_databases(context, len(groups), self.db_path, "sql"), groups,
                                            strict=True)):
            question = questions[i] if questions is not None else question_of(
                prompts[i], messages[i] if messages is not None else None)
            out.append(self._score_group(db, group, question))
        return out

    def _score_group(self, db: str, group: Sequence[str], question: str | None) -> Scores:
        results: list[QueryResult] = []
        shapes: list[QueryShape | None] = []
        for completion in group:
            sql = self._extract(completion)
            if sql is None:
                self._counts["no_sql"] += 1
                results.append(QueryResult(ok=False, error="no SQL found"))
                shapes.append(None)
                continue
            result = execute_readonly(db, sql, self.time_limit_s, self.max_rows, self.max_result_bytes,
                                      keep_rows=False)  # digests only: a group never holds its result sets
            results.append(result)
            shapes.append(self._shapes.check(db, sql, result, question) if result.ok else None)
        for r, shape in zip(results, shapes, strict=True):
            self._count(r, shape)
        scores: Scores = []
        for j, (r, shape) in enumerate(zip(results, shapes, strict=True)):
            parts = [(self.executes_weight, float(r.ok)), (self.rows_weight, float(r.ok and r.num_rows > 0))]
            if len(results) > 1:
                agree = self._agreement(j, results)
                self._counts["agreement_sum"] += agree
                self._counts["agreement_n"] += 1
                parts.append((self.agreement_weight, agree))
            relevance = shape.relevance if shape is not None else (0.0 if _has_terms(question) else None)
            if relevance is not None:
                parts.append((self.relevance_weight, relevance))
            total = sum(w for w, _ in parts)
            value = sum(w * v for w, v in parts) / total if total > 0 else 0.0
            if shape is not None:
                value -= sum(getattr(self, f"{flag}_penalty") for flag in shape.flags)
            scores.append(max(0.0, value))
        return scores

    def _count(self, r: QueryResult, shape: QueryShape | None) -> None:
        c = self._counts
        c["candidates"] += 1
        c["executes"] += r.ok
        c["returns_rows"] += r.ok and r.num_rows > 0
        c["timeouts"] += r.error == "timeout"
        c["too_large"] += (r.error or "").startswith("too large")
        c["denied"] += (r.error or "").startswith(("denied", "rejected"))
        if shape is not None:
            for flag in shape.flags:
                c[flag] += 1
            if shape.relevance is not None:
                c["relevance_sum"] += shape.relevance
                c["relevance_n"] += 1

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
        """exec_rate (share of candidates whose query ran), rows_rate (ran and returned rows), agreement (mean share
        of the group with the same result set), relevance (mean share of the question's terms named); the gaming
        signals, as shares of the queries that ran: select_star_rate, always_true_rate, unselective_rate; counts:
        timeouts (past time_limit_s), too_large (past max_result_bytes), denied (refused by the read-only guard:
        not one SELECT/WITH statement, or a write, PRAGMA, ATTACH...), no_sql (replies with no SQL found). Since the
        previous call."""
        c, n = self._counts, max(self._counts["candidates"], 1)
        ran = max(c["executes"], 1)
        out = {"exec_rate": c["executes"] / n, "rows_rate": c["returns_rows"] / n, "timeouts": float(c["timeouts"]),
               "too_large": float(c["too_large"]), "denied": float(c["denied"]), "no_sql": float(c["no_sql"]),
               **{f"{flag}_rate": c[flag] / ran for flag in ("select_star", "always_true", "unselective")}}
        if c["agreement_n"]:
            out["agreement"] = c["agreement_sum"] / c["agreement_n"]
        if c["relevance_n"]:
            out["relevance"] = c["relevance_sum"] / c["relevance_n"]
        self._counts.clear()
        return out


def group_databases(context: Mapping[str, Any], count: int, default: str | None, where: str) -> list[str]:
    """Each group's database: the context's db_path[i] (the prompt's own) when given, else the scorer's db_path."""
    db_paths = context.get("db_path")
    dbs = [db_paths[i] if db_paths is not None else default for i in range(count)]
    if any(db is None for db in dbs):
        raise ValueError(f"{where}: no database: set the scorer's db_path or pass context db_path=[...]")
    return dbs


def check_limits(where: str, time_limit_s: Any, max_rows: Any, max_result_bytes: Any) -> None:
    """The execution limits both SQL scorers take, each a positive number."""
    if not _is_number(time_limit_s) or not time_limit_s > 0:
        raise ValueError(f"{where}: time_limit_s must be > 0, got {time_limit_s!r}")
    for name, value in (("max_rows", max_rows), ("max_result_bytes", max_result_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: {name} must be an int >= 1, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _has_terms(question: str | None) -> bool:
    return bool(question and question_terms(question))
