"""SQL verifier on a real SQLite file: good, bad and malicious queries; the file stays byte-identical and every
query ends within its time limit."""

from __future__ import annotations

import hashlib
import sqlite3
import time

import pytest

from tao_engine.scoring.sql import (
    SqlVerifier,
    execute_readonly,
    has_top_level_order_by,
    statement_error,
)

LIMIT_S = 0.3
SLACK_S = 3.0  # the CPU is shared: a generous bound that a hang would still blow through


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, city TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total REAL);
    """)
    conn.executemany("INSERT INTO users VALUES (?, ?, ?)",
                     [(i, f"user{i}", ["Paris", "Lyon", "Nice"][i % 3]) for i in range(1, 201)])
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, i % 200 + 1, i * 1.5) for i in range(1, 301)])
    conn.commit()
    conn.close()
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


MALICIOUS = [
    "DROP TABLE users",
    "DELETE FROM users",
    "UPDATE users SET name = 'x'",
    "INSERT INTO users VALUES (999, 'evil', 'X')",
    "ATTACH DATABASE 'evil.db' AS evil",
    "PRAGMA writable_schema = ON",
    "PRAGMA query_only = OFF",
    "SELECT 1; DROP TABLE users",
    "WITH x AS (SELECT 1) DELETE FROM users",  # passes the keyword check: the authorizer must refuse it
    "WITH x AS (SELECT 1) UPDATE users SET name = 'x'",
    "SELECT load_extension('/tmp/evil.so')",
    "SELECT * FROM pragma_table_info('users')",
    "CREATE TABLE evil (x)",
    "VACUUM",
    "REINDEX",
    "SELECT randomblob(2000000000)",
]
RUNAWAY = [
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "SELECT count(*) FROM users a, users b, users c, users d",
    "SELECT a.name FROM users a, users b, users c ORDER BY a.name || b.name || c.name",
]


@pytest.mark.parametrize("sql", MALICIOUS)
def test_malicious_sql_is_refused_and_changes_nothing(db, sql):
    before = digest(db)
    result = execute_readonly(db, sql, time_limit_s=LIMIT_S)
    assert not result.ok and result.error
    assert digest(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["shop.db"]  # no journal, no attached file
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM users").fetchone() == (200,)
    conn.close()


@pytest.mark.parametrize("sql", RUNAWAY)
def test_runaway_queries_stop_at_the_time_limit(db, sql):
    before = digest(db)
    start = time.monotonic()
    result = execute_readonly(db, sql, time_limit_s=LIMIT_S)
    elapsed = time.monotonic() - start
    assert result.error == "timeout" and not result.ok
    assert LIMIT_S * 0.9 <= elapsed < SLACK_S
    assert digest(db) == before


def test_endless_rows_are_capped(db):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"
    result = execute_readonly(db, sql, time_limit_s=LIMIT_S, max_rows=50)
    assert result.ok and result.truncated and len(result.rows) == 50 and result.rows[-1] == (50,)


def test_good_and_bad_queries(db):
    ok = execute_readonly(db, "SELECT name FROM users WHERE id <= 3 ORDER BY id")
    assert ok.ok and ok.rows == (("user1",), ("user2",), ("user3",)) and ok.ordered and not ok.truncated
    empty = execute_readonly(db, "SELECT * FROM users WHERE id < 0")
    assert empty.ok and empty.rows == ()
    assert "no such table" in execute_readonly(db, "SELECT * FROM nope").error
    assert "syntax error" in execute_readonly(db, "SELECT FROM WHERE").error
    with pytest.raises(FileNotFoundError, match="does not exist"):
        execute_readonly(db.parent / "missing.db", "SELECT 1")


def test_statement_checks():
    assert statement_error("  -- comment\n select 1 ; ") is None
    assert statement_error("SELECT ';' AS semi") is None  # a ; inside a string is not a second statement
    assert "more than one" in statement_error("SELECT 1; SELECT 2")
    assert "PRAGMA" in statement_error("PRAGMA writable_schema=1")
    assert statement_error("") == "empty statement"
    assert has_top_level_order_by("SELECT a FROM t ORDER BY a")
    assert not has_top_level_order_by("SELECT a FROM (SELECT a FROM t ORDER BY a)")
    assert not has_top_level_order_by("SELECT 'order by' FROM t")


def test_verifier_parts_and_group_agreement(db):
    group = [
        "```sql\nSELECT name FROM users WHERE city = 'Nice' AND id < 10\n```",
        "SELECT name FROM users WHERE id < 10 AND city = 'Nice' ORDER BY id DESC;",  # same set, other order
        "```sql\nSELECT name FROM users WHERE id < 0\n```",  # runs, no rows
        "```sql\nSELECT nme FROM users\n```",  # error
        "```sql\nDROP TABLE users\n```",  # refused
    ]
    before = digest(db)
    v = SqlVerifier(db_path=str(db), time_limit_s=LIMIT_S)
    (scores,) = v.score_groups(["q"], [group])
    # parts (executes, returns_rows, agreement) weighted equally
    assert scores == pytest.approx([(1 + 1 + 1 / 4) / 3, (1 + 1 + 1 / 4) / 3, 1 / 3, 0.0, 0.0])
    m = v.metrics()
    assert m["exec_rate"] == pytest.approx(3 / 5) and m["rows_rate"] == pytest.approx(2 / 5)
    assert m["denied"] == 1.0 and m["agreement"] == pytest.approx((1 / 4 + 1 / 4) / 5)
    assert digest(db) == before


def test_order_counts_only_when_both_sort(db):
    asc = "SELECT id FROM users WHERE id < 4 ORDER BY id"
    desc = "SELECT id FROM users WHERE id < 4 ORDER BY id DESC"
    v = SqlVerifier(db_path=str(db), executes_weight=0.0, rows_weight=0.0, agreement_weight=1.0)
    assert v.score_groups(["q"], [[asc, desc]]) == [[0.0, 0.0]]
    assert v.score_groups(["q"], [[asc, "SELECT id FROM users WHERE id < 4"]]) == [[1.0, 1.0]]


def test_db_path_from_context_and_single_candidate(db):
    v = SqlVerifier()
    assert v.score_groups(["q"], [["SELECT 1"]], db_path=[str(db)]) == [[1.0]]  # no agreement part for n=1
    with pytest.raises(ValueError, match="no database"):
        v.score_groups(["q"], [["SELECT 1"]])
