"""The label-free SQL result-agreement scorer on a real SQLite file: clusters by result set (row order ignored),
failures and empty results score 0, both modes, per-prompt databases, metrics, the registry name, the file untouched."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from tao_engine.scoring import build_composite
from tao_engine.scoring.sql_agreement import SqlAgreementScorer


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, city TEXT);")
    conn.executemany("INSERT INTO users VALUES (?, ?, ?)",
                     [(i, f"user{i}", ["Paris", "Lyon", "Nice"][i % 3]) for i in range(1, 31)])
    conn.commit()
    conn.close()
    return path


PARIS = "SELECT name FROM users WHERE city = 'Paris'"
PARIS_SORTED = "```sql\nSELECT name FROM users WHERE city = 'Paris' ORDER BY name DESC\n```"
LYON = "SELECT name FROM users WHERE city = 'Lyon'"
EMPTY = "SELECT name FROM users WHERE city = 'Rome'"
BROKEN = "SELECT nme FROM users"
PROSE = "I do not know."


def test_fraction_mode_gives_each_candidate_its_cluster_share(db):
    scorer = SqlAgreementScorer(db_path=str(db))
    group = [PARIS, PARIS_SORTED, LYON, BROKEN, PROSE, PARIS]
    scores = scorer.score_groups(["q"], [group])[0]
    # The three Paris queries agree (ORDER BY does not split them); Lyon is alone; failures score 0.
    assert scores == pytest.approx([3 / 6, 3 / 6, 1 / 6, 0.0, 0.0, 3 / 6])


def test_majority_mode_rewards_the_largest_cluster_only(db):
    scorer = SqlAgreementScorer(db_path=str(db), mode="majority")
    assert scorer.score_groups(["q"], [[LYON, PARIS, PARIS, BROKEN]])[0] == [0.0, 1.0, 1.0, 0.0]
    # A tie goes to the cluster seen first.
    assert scorer.score_groups(["q"], [[LYON, PARIS]])[0] == [1.0, 0.0]


def test_empty_results_join_no_cluster_unless_min_rows_is_zero(db):
    assert SqlAgreementScorer(db_path=str(db)).score_groups(["q"], [[EMPTY, EMPTY, PARIS]])[0] == pytest.approx(
        [0.0, 0.0, 1 / 3])
    lenient = SqlAgreementScorer(db_path=str(db), min_rows=0)
    assert lenient.score_groups(["q"], [[EMPTY, EMPTY, PARIS]])[0] == pytest.approx([2 / 3, 2 / 3, 1 / 3])


def test_a_group_with_nothing_runnable_scores_zero_and_metrics_count(db):
    scorer = SqlAgreementScorer(db_path=str(db))
    assert scorer.score_groups(["q"], [[BROKEN, PROSE, "DROP TABLE users"]])[0] == [0.0, 0.0, 0.0]
    scorer.score_groups(["q"], [[PARIS, PARIS, LYON, BROKEN]])
    metrics = scorer.metrics()
    assert metrics["exec_rate"] == pytest.approx(3 / 7)  # PARIS, PARIS, LYON ran; BROKEN failed twice
    assert metrics["no_sql"] == 2.0  # the prose answer and the DROP (the extractor takes SELECT/WITH only)
    assert metrics["cluster_rate"] == pytest.approx(3 / 7)
    assert metrics["clusters_per_group"] == pytest.approx(2 / 2)
    assert scorer.metrics()["clusters_per_group"] == 0.0  # counters reset after each read


def test_per_prompt_databases_from_context_win(db, tmp_path):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.executescript("CREATE TABLE users (id INTEGER, name TEXT, city TEXT); "
                       "INSERT INTO users VALUES (1, 'a', 'Paris'), (2, 'b', 'Lyon');")
    conn.close()
    scorer = SqlAgreementScorer(db_path="/nonexistent.db")
    query_a = "SELECT name FROM users WHERE id = 1"
    query_b = "SELECT name FROM users WHERE id = 2"
    scores = scorer.score_groups(["q1", "q2"], [[query_a, query_b], [query_a, query_a]],
                                 db_path=[str(db), str(other)])
    assert scores == [[0.5, 0.5], [1.0, 1.0]]
    with pytest.raises(ValueError, match="no database"):
        SqlAgreementScorer().score_groups(["q"], [[PARIS]])


def test_the_database_file_is_never_changed(db):
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    SqlAgreementScorer(db_path=str(db)).score_groups(
        ["q"], [["DELETE FROM users", "WITH x AS (SELECT 1) DELETE FROM users", "DROP TABLE users", PARIS]])
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_registered_by_name_and_combined_with_the_sql_verifier(db):
    composite = build_composite([
        {"name": "sql", "db_path": str(db), "agreement_weight": 0.0},
        {"name": "sql_agreement", "mode": "majority", "weight": 2.0},
    ])
    report = composite.score_groups(["q"], [[PARIS, PARIS, LYON, BROKEN]], db_path=[str(db)])
    # sql (executes, returns rows; agreement weighted out): 1, 1, 1, 0; agreement x2: 2, 2, 0, 0.
    assert report.scores[0] == pytest.approx([3.0, 3.0, 1.0, 0.0])
    assert report.metrics["sql_agreement/majority_share"] == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [{"mode": "vote"}, {"min_rows": -1}, {"time_limit_s": 0}, {"max_rows": 0},
                                 {"extract": "nope"}])
def test_bad_settings_are_rejected_with_the_field_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad)) if "extract" not in bad else "extractor"):
        SqlAgreementScorer(**bad)
