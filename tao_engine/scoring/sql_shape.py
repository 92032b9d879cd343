"""Defences of the SQL rewards against gaming: what a query's shape says beyond "it ran and agreed".

Rewards for executing, returning rows and agreeing with the group are easy to game: a tuned model learned
`SELECT * FROM <table> WHERE <column> IS NOT NULL`, which runs, returns rows and agrees with itself (issue 23). Each
query that ran is therefore checked for:

- select_star: `*` or `t.*` in a select list (`COUNT(*)` is fine): it answers no particular question;
- always_true: a condition that cannot filter: a constant comparison (`1=1`, `'a'='a'`, `2>1`, `WHERE 1`), a column
  against itself (`x = x`), `LIKE '%'`, or, on the database itself, an outermost WHERE that keeps every row of what
  it filters (`c IS NOT NULL` on a column without NULLs);
- unselective: the minimum-selectivity check: the query returns more than `max_row_fraction` of the rows of the
  largest table it reads (or of a join's product);
- relevance: the share of the question's terms (its content words and numbers, with the schema cut out) that the
  query names as a table, a column or a value: a real answer to "which customers live in Paris" names customers and
  'Paris'.

The data checks (always_true's WHERE, unselective) skip tables under `MIN_TABLE_ROWS` rows, where any answer keeps a
large share, and run as COUNT(*) queries under the same read-only guards and time limit as the query.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tao_engine.scoring.sql_exec import QueryResult, count_rows, mask_literals, top_level

MIN_TABLE_ROWS = 10
SHAPE_FLAGS = ("select_star", "always_true", "unselective")

_COMMENTS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?(?:\*/|$)", re.DOTALL)
_STAR = re.compile(r"(?:\bselect\s+(?:distinct\s+|all\s+)?|,\s*|\b\w+\s*\.\s*)\*", re.IGNORECASE)
_NUM = r"[-+]?\d+(?:\.\d+)?"
# Comparisons count only where a condition starts (not `x - 1 = 1`) and ends (not `1 = 1 + x`).
_COND_START = r"(?:\b(?:where|and|or|on|having|when)\s+|\(\s*)"
_COND_END = r"(?![\w.]|\s*[(+\-*/%|])"
_CONST_CMP = re.compile(rf"{_COND_START}({_NUM})\s*(==|=|!=|<>|<=|>=|<|>)\s*({_NUM}){_COND_END}", re.IGNORECASE)
_SELF_CMP = re.compile(rf"{_COND_START}([A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)?)\s*(==|=|>=|<=|\bis\b)\s*\1"
                       rf"{_COND_END}", re.IGNORECASE)
_STR_SELF_CMP = re.compile(r"('(?:[^']|'')*')\s*(==|=|>=|<=|\bis\b)\s*\1", re.IGNORECASE)
_BARE_CONST = re.compile(r"\b(where|and|or|on|having|when)\s+(not\s+)?(true|false|\d+)\b"
                         r"(?!\s*(?:[=<>!+\-*/%|]|is\b|like\b|glob\b|between\b|in\b|and\b))", re.IGNORECASE)
_LIKE_ALL = re.compile(r"\blike\s+'%+'", re.IGNORECASE)
_COMPOUND = re.compile(r"\b(union|intersect|except)\b", re.IGNORECASE)
_WHERE_END = re.compile(r"\b(group\s+by|having|order\s+by|limit|window)\b", re.IGNORECASE)
_QUESTION_MARK = re.compile(r"(?im)^\s*(?:question|q)\s*:\s*")
_FENCE = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_WORD = re.compile(r"\d+(?:\.\d+)?|[A-Za-z]+")
_OPS = {"=": lambda a, b: a == b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<>": lambda a, b: a != b,
        "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_STOPWORDS = frozenset("""
a about above after all also am an and any are as at be been before being below between both but by can could did
do does each every few find for from get give had has have how i if in into is it its list many me more most much my
no nor not of on once only or other our out over own please return same shall should show so some such tell than
that the their them then there these they this those through to too under until up very was we were what when where
which while who whom whose why will with would you your query sql table tables database column columns row rows
write select answer question using use given
""".split())
_SQL_KEYWORDS = frozenset("""
select distinct all from where and or not in is null like glob between exists case when then else end as on join
inner left right full outer cross natural using group by having order asc desc limit offset union intersect except
with recursive count sum avg min max total cast true false collate escape window over partition rows range
""".split())


@dataclass(frozen=True)
class QueryShape:
    select_star: bool = False
    always_true: bool = False
    unselective: bool = False
    relevance: float | None = None  # None: the question has no terms to look for

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(name for name in SHAPE_FLAGS if getattr(self, name))


def _code_without_comments(sql: str) -> str:
    return _COMMENTS.sub(lambda m: " " * len(m.group()) if m.group().startswith(("--", "/*")) else m.group(), sql)


def selects_star(sql: str) -> bool:
    return _STAR.search(mask_literals(sql)) is not None


def constant_true_condition(sql: str) -> bool:
    """A condition that is true whatever the data: constant comparisons, self-comparisons, `LIKE '%'`, `WHERE 1`."""
    code, text = mask_literals(sql), _code_without_comments(sql)
    for m in _CONST_CMP.finditer(code):
        if _OPS[m.group(2)](float(m.group(1)), float(m.group(3))):
            return True
    for m in _BARE_CONST.finditer(code):
        value = m.group(3).lower()
        truthy = value == "true" or (value != "false" and float(value) != 0)
        if truthy != bool(m.group(2)):
            return True
    return bool(_SELF_CMP.search(code) or _STR_SELF_CMP.search(text) or _LIKE_ALL.search(text))


def split_where(sql: str) -> tuple[str, str, str] | None:
    """(the WITH prefix, the FROM clause, the WHERE condition) of a single outermost SELECT, as written; None for
    a compound query or one without a top-level WHERE."""
    flat = top_level(sql)
    selects = list(re.finditer(r"\bselect\b", flat, re.IGNORECASE))
    if len(selects) != 1 or _COMPOUND.search(flat):
        return None
    start = selects[0]
    found_from = re.compile(r"\bfrom\b", re.IGNORECASE).search(flat, start.end())
    if found_from is None:
        return None
    found_where = re.compile(r"\bwhere\b", re.IGNORECASE).search(flat, found_from.end())
    if found_where is None:
        return None
    end = _WHERE_END.search(flat, found_where.end())
    stop = end.start() if end else len(sql.rstrip().rstrip(";"))
    return sql[: start.start()], sql[found_from.end(): found_where.start()], sql[found_where.end(): stop]


def question_of(prompt: str, messages: Any = None) -> str:
    """The question a prompt asks: its last user message (when the chat is known), without code blocks or
    CREATE TABLE statements, from its last "Question:" line on when it has one."""
    text = prompt
    if isinstance(messages, Sequence) and not isinstance(messages, str):
        users = [m.get("content") for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
        if users and isinstance(users[-1], str):
            text = users[-1]
    text = _without_create_tables(_FENCE.sub(" ", text))
    marks = list(_QUESTION_MARK.finditer(text))
    return text[marks[-1].end():] if marks else text


def _without_create_tables(text: str) -> str:
    out, i = [], 0
    for m in re.finditer(r"\bcreate\s+table\b", text, re.IGNORECASE):
        if m.start() < i:
            continue
        out.append(text[i: m.start()])
        j, depth = m.end(), 0
        while j < len(text):  # to the parenthesis closing the column list (types like DECIMAL(10, 2) nest)
            depth += text[j] == "("
            if text[j] == ")":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        i = j + 1
    out.append(text[i:])
    return " ".join(out)


def _stem(word: str) -> str:
    word = word.lower()
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _words(text: str) -> list[str]:
    # Identifiers split at underscores and camelCase humps: customer_name / customerName -> customer, name.
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text.replace("_", " "))
    return _WORD.findall(spaced)


def question_terms(question: str) -> set[str]:
    return {_stem(w) for w in _words(question) if w.lower() not in _STOPWORDS and (len(w) > 1 or w.isdigit())}


def query_terms(sql: str) -> set[str]:
    """What a query names: its identifiers (not keywords) and the words and numbers of its literals."""
    code = mask_literals(sql)
    names = {_stem(w) for w in _words(code) if w.lower() not in _SQL_KEYWORDS}
    literals = [m.group()[1:-1] for m in _COMMENTS.finditer(sql) if m.group().startswith(("'", '"'))]
    return names | {_stem(w) for text in literals for w in _words(text)}


@dataclass
class ShapeChecker:
    """Checks queries that ran (see the module docstring); caches table sizes per database file version."""

    _MAX_CACHED = 4096  # counts remembered; past it the cache starts over (a long run sees many FROM clauses)

    max_row_fraction: float = 0.5
    time_limit_s: float = 1.0
    _counts: dict[tuple[str, int, str], int | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        f = self.max_row_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise ValueError(f"max_row_fraction must be in (0, 1], got {f!r}")

    def check(self, db: str | Path, sql: str, result: QueryResult, question: str | None) -> QueryShape:
        terms = question_terms(question) if question else set()
        relevance = len(terms & query_terms(sql)) / len(terms) if terms else None
        return QueryShape(
            select_star=selects_star(sql),
            always_true=constant_true_condition(sql) or self._where_keeps_everything(db, sql),
            unselective=self._unselective(db, sql, result),
            relevance=relevance,
        )

    def _where_keeps_everything(self, db: str | Path, sql: str) -> bool:
        parts = split_where(sql)
        if parts is None:
            return False
        prefix, source, condition = parts
        everything = self._count_cached(db, f"{prefix}SELECT 1 FROM {source}")
        if everything is None or everything < MIN_TABLE_ROWS:
            return False
        return count_rows(db, f"{prefix}SELECT 1 FROM {source} WHERE {condition}", self.time_limit_s) == everything

    def _unselective(self, db: str | Path, sql: str, result: QueryResult) -> bool:
        sizes = [self._rows_of(db, table) for table in {t for t, _ in result.reads}]
        largest = max((s for s in sizes if s is not None), default=0)
        if largest < MIN_TABLE_ROWS:
            return False
        returned = count_rows(db, sql, self.time_limit_s) if result.truncated else result.num_rows
        return returned is not None and returned > self.max_row_fraction * largest

    def _rows_of(self, db: str | Path, table: str) -> int | None:
        if table.lower().startswith("sqlite_"):
            return None
        return self._count_cached(db, "SELECT 1 FROM \"" + table.replace('"', '""') + '"')

    def _count_cached(self, db: str | Path, sql: str) -> int | None:
        """count_rows, remembered per database file version: a group's candidates read the same tables."""
        try:
            key = (str(db), os.stat(db).st_mtime_ns, sql)
        except OSError:
            return None
        if key not in self._counts:
            if len(self._counts) >= self._MAX_CACHED:
                self._counts.clear()
            self._counts[key] = count_rows(db, sql, self.time_limit_s)
        return self._counts[key]
