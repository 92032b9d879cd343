"""SQL result agreement ("sql_agreement"): a label-free group scorer that rewards a candidate query for returning
the result set most of its group returns (self-consistency over execution results, as majority vote does over final
answers).

Every candidate of a prompt is run read-only on that prompt's database (`tao_engine.scoring.sql.execute_readonly`,
with its guards: read-only file, SELECT/WITH only, authorizer, time limit, row cap). Candidates are clustered by
their result set (rows as a multiset, floats rounded; row order is ignored so that an ORDER BY does not split a
cluster). A candidate's score:

- mode "fraction": the share of the group (itself included) that returns its result set, in (0, 1];
- mode "majority": 1.0 for the candidates in the largest cluster (ties: the cluster seen first), else 0.0.

A candidate with no SQL, or whose query fails, times out or passes the row/byte caps' byte limit, scores 0 and joins
no cluster. With `min_rows` = 1 (the default) an empty result also scores 0: queries that match nothing agree with
each other too easily. So does a query of a shape listed in `reject` (tao_engine.scoring.sql_shape): by default
`SELECT *`, an always-true condition and an unselective result, the shapes a group learns to agree on without
answering (`SELECT * FROM t WHERE c IS NOT NULL`). Results are compared by digest, never kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tao_engine.scoring.base import Scores
from tao_engine.scoring.extract import get_extractor
from tao_engine.scoring.sql import check_limits, group_databases
from tao_engine.scoring.sql_exec import DEFAULT_MAX_RESULT_BYTES, QueryResult, execute_readonly
from tao_engine.scoring.sql_shape import SHAPE_FLAGS, ShapeChecker

AGREEMENT_MODES = ("fraction", "majority")


@dataclass
class SqlAgreementScorer:
    """Group scorer: result-set agreement of each candidate with its group (see the module docstring). The database
    is `db_path`, or per prompt the context key `db_path` (which wins)."""

    name: ClassVar[str] = "sql_agreement"
    db_path: str | None = None  # the SQLite file; a prompt's context key "db_path" wins
    mode: str = "fraction"  # fraction (the share of the group with this result set) or majority (1 in the largest)
    min_rows: int = 1  # a result with fewer rows scores 0 and joins no cluster (empty results agree too easily)
    time_limit_s: float = 1.0  # per query; past it the candidate scores 0
    max_rows: int = 1000  # rows fetched per query
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES  # a bigger result scores 0
    reject: tuple[str, ...] = SHAPE_FLAGS  # query shapes that score 0 and join no cluster; () turns the check off
    max_row_fraction: float = 0.5  # the "unselective" shape: more than this share of the largest table read
    extract: str = "sql"  # how the query is found: sql (a ```sql block or a bare SELECT/WITH) or stripped
    _counts: Counter = field(default_factory=Counter, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in AGREEMENT_MODES:
            raise ValueError(f"sql_agreement: mode must be one of {AGREEMENT_MODES}, got {self.mode!r}")
        if isinstance(self.min_rows, bool) or not isinstance(self.min_rows, int) or self.min_rows < 0:
            raise ValueError(f"sql_agreement: min_rows must be an int >= 0, got {self.min_rows!r}")
        check_limits("sql_agreement", self.time_limit_s, self.max_rows, self.max_result_bytes)
        if not isinstance(self.reject, (list, tuple)) or not all(r in SHAPE_FLAGS for r in self.reject):
            raise ValueError(f"sql_agreement: reject must be a list of {list(SHAPE_FLAGS)}, got {self.reject!r}")
        self.reject = tuple(self.reject)
        try:
            self._shapes = ShapeChecker(self.max_row_fraction, self.time_limit_s)
        except ValueError as exc:
            raise ValueError(f"sql_agreement: {exc}") from None
        self._extract = get_extractor(self.extract)

    def answer_keys(self, prompts: Sequence[str], groups: Sequence[Sequence[str]],
                    **context: Any) -> list[list[Hashable | None]]:
        """[P][n] each candidate's result-set digest (None: no SQL, failed, too few rows or a rejected shape): the
        clusters the agreement counts. Runs the queries again; the counters of `metrics()` are left as they are."""
        dbs = group_databases(context, len(groups), self.db_path, "sql_agreement")
        saved = self._counts.copy()
        try:
            return [[self._result_key(db, c) for c in group] for db, group in zip(dbs, groups, strict=True)]
        finally:
            self._counts = saved

    def score_groups(self, prompts: Sequence[str], groups: Sequence[Sequence[str]], **context: Any) -> list[Scores]:
        dbs = group_databases(context, len(groups), self.db_path, "sql_agreement")
        return [self.score_group(db, group) for db, group in zip(dbs, groups, strict=True)]

    def score_group(self, db: str, group: Sequence[str]) -> Scores:
        keys = [self._result_key(db, completion) for completion in group]  # None = no cluster
        counts = Counter(k for k in keys if k is not None)
        self._counts["groups"] += 1
        self._counts["candidates"] += len(keys)
        self._counts["clustered"] += sum(counts.values())
        self._counts["clusters"] += len(counts)
        if not counts:
            return [0.0] * len(keys)
        top = max(counts, key=counts.__getitem__)  # first-seen cluster on ties (Counter keeps insertion order)
        self._counts["majority_share"] += counts[top] / len(keys)
        if self.mode == "majority":
            return [float(k is not None and k == top) for k in keys]
        return [0.0 if k is None else counts[k] / len(keys) for k in keys]

    def _result_key(self, db: str, completion: str) -> Hashable | None:
        sql = self._extract(completion)
        if sql is None:
            self._counts["no_sql"] += 1
            return None
        result: QueryResult = execute_readonly(db, sql, self.time_limit_s, self.max_rows, self.max_result_bytes,
                                               keep_rows=False)
        if not result.ok:
            self._counts["failed"] += 1
            return None
        if result.num_rows < self.min_rows:
            self._counts["too_few_rows"] += 1
            return None
        if self.reject:
            flags = set(self._shapes.check(db, sql, result, None).flags) & set(self.reject)
            if flags:
                self._counts["rejected_shape"] += 1
                return None
        return result.result_key(ordered=False)

    def metrics(self) -> dict[str, float]:
        """exec_rate (queries that ran), cluster_rate (candidates in some cluster), clusters_per_group,
        majority_share (largest cluster / group size), rejected_shape_rate (queries that ran but had a rejected
        shape), no_sql; counters since the previous call."""
        c = self._counts
        n, g = max(c["candidates"], 1), max(c["groups"], 1)
        out = {
            "exec_rate": (c["candidates"] - c["no_sql"] - c["failed"]) / n,
            "cluster_rate": c["clustered"] / n,
            "clusters_per_group": c["clusters"] / g,
            "majority_share": c["majority_share"] / g,
            "rejected_shape_rate": c["rejected_shape"] / n,
            "no_sql": float(c["no_sql"]),
        }
        self._counts.clear()
        return out
