"""The SQL scorers' defences against reward gaming (issue 23 item 2). A tuned model learned
`SELECT * FROM <table> WHERE <column> IS NOT NULL`: it runs, returns rows and agrees with itself, so it outscored real
answers under `sql` and `sql_agreement`. Such queries must no longer score above a real answer."""

from __future__ import annotations

import sqlite3

import pytest

from tao_engine.scoring import build_composite
from tao_engine.scoring.sql import SqlVerifier
from tao_engine.scoring.sql_agreement import SqlAgreementScorer
from tao_engine.scoring.sql_shape import (
    constant_true_condition,
    query_terms,
    question_of,
    question_terms,
    selects_star,
)

QUESTION = "Which customers live in Paris?"
PROMPT = ("Answer with one SQLite query.\nCREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
          "city TEXT, credit DECIMAL(10, 2));\nQuestion: " + QUESTION)
REAL = "```sql\nSELECT name FROM customers WHERE city = 'Paris'\n```"
GAMED = [
    "SELECT * FROM customers WHERE name IS NOT NULL",  # the shape the tuned model learned
    "SELECT name FROM customers WHERE name IS NOT NULL",  # always true on this data, no star
    "SELECT * FROM customers",
    "SELECT name FROM customers WHERE 1=1",
    "SELECT name FROM customers WHERE city LIKE '%' OR id = id",
    "SELECT c.* FROM customers c WHERE c.id > 0",
]


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, credit REAL)")
    cities = ["Paris", "Lyon", "Nice", "Lille"]
    conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)",
                     [(i, f"name{i}", cities[i % 4], i * 10.0) for i in range(1, 41)])
    conn.commit()
    conn.close()
    return str(path)


@pytest.mark.parametrize("gamed", GAMED)
def test_gamed_queries_that_agree_no_longer_outscore_a_real_answer(db, gamed):
    group = [REAL, gamed, gamed, gamed]  # three gamed queries agree with each other; the real answer is alone
    verifier = SqlVerifier(db_path=db).score_groups([PROMPT], [group])[0]
    assert verifier[0] > max(verifier[1:]), verifier
    agreement = SqlAgreementScorer(db_path=db).score_groups([PROMPT], [group])[0]
    assert agreement == [0.25, 0.0, 0.0, 0.0]  # the gamed shapes join no cluster
    # The user's setup: both scorers, summed.
    combined = build_composite([{"name": "sql"}, {"name": "sql_agreement"}]).score_groups(
        [PROMPT], [group], db_path=[db]).scores[0]
    assert combined[0] > max(combined[1:]), combined


def test_without_the_defences_the_gamed_query_won(db):
    """The failure as it was: with the shape checks and the relevance part off, agreement lets the gamed query win."""
    group = [REAL, GAMED[0], GAMED[0], GAMED[0]]
    off = SqlVerifier(db_path=db, relevance_weight=0.0, select_star_penalty=0.0, always_true_penalty=0.0,
                      unselective_penalty=0.0).score_groups([PROMPT], [group])[0]
    assert off[1] > off[0]
    assert SqlAgreementScorer(db_path=db, reject=()).score_groups([PROMPT], [group])[0][1] == 0.75


def test_the_metrics_show_the_gaming(db):
    verifier = SqlVerifier(db_path=db)
    verifier.score_groups([PROMPT], [[REAL, GAMED[0], GAMED[0], GAMED[1]]])
    m = verifier.metrics()
    assert m["select_star_rate"] == 0.5 and m["always_true_rate"] == 0.75 and m["unselective_rate"] == 0.75
    assert 0 < m["relevance"] < 1
    agreement = SqlAgreementScorer(db_path=db)
    agreement.score_groups([PROMPT], [[REAL, GAMED[0], GAMED[0], GAMED[1]]])
    assert agreement.metrics()["rejected_shape_rate"] == 0.75


def test_a_real_answer_keeps_its_full_score(db):
    # Two real answers that agree, with a question given as context (it wins over the prompt's text).
    verifier = SqlVerifier(db_path=db)
    scores = verifier.score_groups(["ignored"], [[REAL, REAL]], question=[QUESTION])[0]
    # executes, returns rows, agrees: 1 each; relevance 2/3 ("live" is not in the query); no penalty.
    assert scores == [pytest.approx((3 + 2 / 3) / 4)] * 2
    count = "SELECT COUNT(*) FROM customers WHERE city = 'Paris'"
    assert SqlVerifier(db_path=db).score_groups(["How many customers live in Paris?"], [[count]])[0][0] > 0.8


@pytest.mark.parametrize("sql, expected", [
    ("SELECT a FROM t WHERE 1=1", True), ("SELECT a FROM t WHERE b = 'x' AND 1 = 1", True),
    ("SELECT a FROM t WHERE a = a", True), ("SELECT a FROM t WHERE t.a = t.a", True),
    ("SELECT a FROM t WHERE 'p' = 'p'", True), ("SELECT a FROM t WHERE b LIKE '%'", True),
    ("SELECT a FROM t WHERE 1", True), ("SELECT a FROM t WHERE b = 2 OR TRUE", True),
    ("SELECT a FROM t WHERE 2 > 1", True), ("SELECT a FROM t WHERE (1 <> 2)", True),
    ("SELECT a FROM t WHERE b = 'a = a'", False), ("SELECT a FROM t WHERE x - 1 = 1", False),
    ("SELECT a FROM t WHERE 1 = 1 + b", False), ("SELECT a FROM t WHERE a = b", False),
    ("SELECT a FROM t -- WHERE 1 = 1", False), ("SELECT a FROM t WHERE 0", False),
    ("SELECT a FROM t WHERE b LIKE '%x%'", False),
])
def test_constant_true_conditions(sql, expected):
    assert constant_true_condition(sql) is expected


@pytest.mark.parametrize("sql, expected", [
    ("SELECT * FROM t", True), ("SELECT DISTINCT * FROM t", True), ("SELECT t.* FROM t", True),
    ("SELECT a, * FROM t", True), ("SELECT COUNT(*) FROM t", False), ("SELECT a * b FROM t", False),
    ("SELECT '*' FROM t", False),
])
def test_select_star(sql, expected):
    assert selects_star(sql) is expected


def test_question_terms_skip_the_schema_and_match_columns_and_values():
    assert question_of(PROMPT) == QUESTION
    assert question_of("ignored", [{"role": "system", "content": "x"}, {"role": "user", "content": PROMPT}]) == QUESTION
    terms = question_terms(QUESTION)
    assert terms == {"customer", "live", "pari"}
    assert terms & query_terms(REAL) == {"customer", "pari"}
    assert terms & query_terms(GAMED[0]) == {"customer"}
    assert "customer" not in query_terms("SELECT name FROM t -- customers")  # comments do not count
