"""Running model-written SQL on a SQLite database that it cannot change, in bounded time and memory.

Defence in depth, because the SQL comes from a model:
1. the file is opened read-only (`file:...?mode=ro` URI) and `PRAGMA query_only=ON` is set;
2. only one statement, starting with SELECT or WITH, is accepted (a fast, friendly rejection; not the guard);
3. the guard: an authorizer callback denies every action but reading tables, selecting, calling functions and
   recursive CTEs (so `WITH x AS (...) DELETE ...`, ATTACH, PRAGMA, load_extension are refused when compiled);
4. a progress handler aborts a query past its time limit (a never-ending recursive CTE, a huge cross join);
5. memory: strings/blobs are capped in length (SQLITE_LIMIT_LENGTH), rows are fetched up to a row cap AND a byte cap
   on the whole result, and a scorer keeps a result's digest, not its rows (`keep_rows=False`), so a group of n
   candidates holds at most one result at a time.

The authorizer also records which (table, column) pairs a query reads: what tao_engine.scoring.sql_shape checks.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                              sqlite3.SQLITE_RECURSIVE})
_DENIED_FUNCTIONS = frozenset({"load_extension"})
_MAX_VALUE_BYTES = 1_000_000  # longest string/blob a query may build (randomblob(1e12) fails fast instead)
DEFAULT_MAX_RESULT_BYTES = 2_000_000  # a whole result: room for one longest value, far above any real answer
_LITERALS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?(?:\*/|$)", re.DOTALL)
_VALUE_OVERHEAD = 16  # bytes counted per value besides its payload (what Python holds for a small object)


def strip_literals(sql: str) -> str:
    """Comments out and string / quoted-identifier literals blanked, so keywords inside them do not count."""
    return _LITERALS.sub(lambda m: " " if m.group().startswith(("--", "/*")) else "''", sql)


def mask_literals(sql: str) -> str:
    """`sql` with the same length and positions, comments and the insides of literals replaced by spaces: searches
    on it find only code, and their positions slice the original text."""
    def blank(m: re.Match[str]) -> str:
        text = m.group()
        if text.startswith(("--", "/*")):
            return " " * len(text)
        return text[0] + " " * (len(text) - 2) + text[-1] if len(text) >= 2 else " "

    return _LITERALS.sub(blank, sql)


def statement_error(sql: str) -> str | None:
    """Why `sql` is not a single SELECT/WITH statement, or None when it is."""
    code = strip_literals(sql).strip().rstrip(";").strip()
    if not code:
        return "empty statement"
    if ";" in code:
        return "more than one statement"
    first = code.split(None, 1)[0].upper()
    if first not in ("SELECT", "WITH"):
        return f"only SELECT/WITH statements are allowed, got {first}"
    return None


def top_level(sql: str) -> str:
    """`mask_literals(sql)` with everything inside parentheses blanked too: what the outermost query says."""
    depth, flat = 0, []
    for ch in mask_literals(sql):
        depth += ch == "("
        flat.append(ch if depth == 0 else " ")
        depth -= ch == ")"
    return "".join(flat)


def has_top_level_order_by(sql: str) -> bool:
    """Whether the outermost query sorts its result (an ORDER BY outside every parenthesis)."""
    return re.search(r"\border\s+by\b", top_level(sql), re.IGNORECASE) is not None


@dataclass(frozen=True)
class QueryResult:
    ok: bool  # ran to completion (or to the row cap)
    rows: tuple[tuple[Any, ...], ...] = ()  # empty when run with keep_rows=False
    truncated: bool = False  # stopped at the row cap
    error: str | None = None  # "timeout", "denied: ...", "rejected: ...", "too large: ...", or sqlite's message
    ordered: bool = False  # the query has a top-level ORDER BY
    num_rows: int = 0
    digest: bytes = b""  # the rows in order
    unordered_digest: bytes = b""  # the rows as a multiset
    reads: frozenset[tuple[str, str]] = frozenset()  # (table, column) pairs the query reads

    def result_key(self, ordered: bool) -> tuple[bool, bytes]:
        """What two results must share to be equal: the rows as a list, or as a multiset when order is free."""
        return (self.truncated, self.digest if ordered else self.unordered_digest)


def _normalized(value: Any) -> Any:
    # Floats rounded (1e-9) and integral ones as ints, so that 1 and 1.0, or 0.1 + 0.2 and 0.3, compare equal.
    if isinstance(value, float):
        value = round(value, 9)
        return int(value) if value.is_integer() else value
    return value


def _row_digest(row: tuple[Any, ...]) -> bytes:
    return hashlib.blake2b(repr(tuple(_normalized(v) for v in row)).encode("utf-8", "surrogatepass"),
                           digest_size=16).digest()


def _row_bytes(row: tuple[Any, ...]) -> int:
    return sum(_VALUE_OVERHEAD + (len(v) if isinstance(v, (str, bytes)) else 8) for v in row)


@contextmanager
def readonly_connection(db_path: str | Path, time_limit_s: float,
                        reads: set[tuple[str, str]] | None = None) -> Iterator[sqlite3.Connection]:
    """A guarded connection (see the module docstring) whose queries stop `time_limit_s` after it opens. `reads`
    collects the (table, column) pairs that statements read. A missing file raises FileNotFoundError (the
    configuration's error, not a candidate's)."""
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"SQL verifier: database {str(path)!r} does not exist")

    def authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_READ and reads is not None and arg1:
            reads.add((arg1, arg2 or ""))
        return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY

    conn = sqlite3.connect(_readonly_uri(path), uri=True, timeout=0.5, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only=ON")  # before the authorizer, which refuses every PRAGMA
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.set_authorizer(authorize)
        deadline = time.monotonic() + time_limit_s
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)  # nonzero aborts the query
        yield conn
    finally:
        conn.close()


def _readonly_uri(path: Path) -> str:
    """The read-only URI of a database file. A WAL-mode file with no -wal beside it (every write checkpointed) is
    opened `immutable`: a plain read-only open would create -wal and -shm files beside it, and the verifier must
    leave nothing behind. With a -wal present a writer may be active, so locking stays on."""
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        with path.open("rb") as f:
            header = f.read(20)
    except OSError:
        return uri
    wal_mode = len(header) == 20 and header[18] == 2 and header[19] == 2  # file format versions 2 = WAL
    if wal_mode and not path.with_name(path.name + "-wal").exists():
        uri += "&immutable=1"
    return uri


def _error_text(exc: BaseException) -> str:
    msg = str(exc)
    if isinstance(exc, sqlite3.Error):
        if "interrupted" in msg:
            return "timeout"
        return f"denied: {msg}" if "not authorized" in msg else msg
    return f"{type(exc).__name__}: {msg}"


def execute_readonly(db_path: str | Path, sql: str, time_limit_s: float = 1.0, max_rows: int = 1000,
                     max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES, keep_rows: bool = True) -> QueryResult:
    """Run one SELECT/WITH statement read-only. A bad query gives `ok=False` and an error; so does a result over
    `max_result_bytes` ("too large: ..."). Past `max_rows` rows the result stops there (`truncated`). With
    `keep_rows=False` only the count and digests are kept."""
    reason = statement_error(sql)
    if reason is not None:
        if not Path(db_path).is_file():
            raise FileNotFoundError(f"SQL verifier: database {str(db_path)!r} does not exist")
        return QueryResult(ok=False, error=f"rejected: {reason}")
    reads: set[tuple[str, str]] = set()
    kept: list[tuple[Any, ...]] = []
    digests: list[bytes] = []
    size, truncated = 0, False
    with readonly_connection(db_path, time_limit_s, reads) as conn:
        try:
            cursor = conn.execute(sql)
            while (row := cursor.fetchone()) is not None:
                if len(digests) == max_rows:
                    truncated = True
                    break
                size += _row_bytes(row)
                if size > max_result_bytes:
                    return QueryResult(ok=False, error=f"too large: the result passed max_result_bytes="
                                       f"{max_result_bytes} after {len(digests)} rows", reads=frozenset(reads))
                digests.append(_row_digest(row))
                if keep_rows:
                    kept.append(row)
        except (sqlite3.Error, ValueError, OverflowError, MemoryError) as exc:  # e.g. a value Python cannot convert
            return QueryResult(ok=False, error=_error_text(exc), reads=frozenset(reads))
    ordered = hashlib.blake2b(b"".join(digests), digest_size=16).digest()
    unordered = hashlib.blake2b(b"".join(sorted(digests)), digest_size=16).digest()
    return QueryResult(ok=True, rows=tuple(kept), truncated=truncated, ordered=has_top_level_order_by(sql),
                       num_rows=len(digests), digest=ordered, unordered_digest=unordered, reads=frozenset(reads))


def count_rows(db_path: str | Path, sql: str, time_limit_s: float) -> int | None:
    """How many rows a SELECT/WITH statement returns (its COUNT(*), under the same guards), or None when it cannot
    be counted in time."""
    if statement_error(sql) is not None:
        return None
    with readonly_connection(db_path, time_limit_s) as conn:
        try:
            row = conn.execute(f"SELECT COUNT(*) FROM ({sql.strip().rstrip(';')})").fetchone()
        except (sqlite3.Error, ValueError, OverflowError, MemoryError):
            return None
    return int(row[0]) if row and isinstance(row[0], int) else None
