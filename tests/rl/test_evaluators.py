"""Per-task evaluators of the eval set (issue 23 item 7): numeric answers, exact and normalized strings, SQL
execution accuracy against a gold query (order-insensitive), JSON field match; labels never reach the scorers; the
tune summary explains eval_score, and the run plots each scorer's reward and the zero-variance share."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tao_engine.cli import main
from tao_engine.engine import Engine, EngineConfig
from tao_engine.rl.evaluation import evaluate
from tao_engine.rl.evaluators import build_evaluator, check_eval_labels, evaluators_for
from tao_engine.rl.exploration.tasks import TaskConfig
from tao_engine.rl.prompt_data import PromptRecord
from tao_engine.scoring.registry import build_composite
from tests.run_fixtures import tiny_model_dir, to_toml, tune_table, write_jsonl

SEEN: list[set[str]] = []


def context_keys(prompts: list[str], completions: list[str], **context: object) -> list[float]:
    """Records which context keys reached the scorer."""
    SEEN.append(set(context))
    return [1.0] * len(completions)


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("db") / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (name TEXT, price REAL)")
        conn.executemany("INSERT INTO items VALUES (?, ?)", [("apple", 1.0), ("pear", 2.5), ("fig", 4.0)])
    return str(path)


def test_numeric_reads_the_number_and_refuses_a_label_that_is_not_one():
    numeric = build_evaluator("numeric", "boxed_or_last_number")
    assert numeric.score("so the total is \\boxed{1,200}.", {"answer": "1200"}) == 1.0
    assert numeric.score("about 41", {"answer": 42}) == 0.0 and numeric.score("no idea", {"answer": "42"}) == 0.0
    assert "not a number" in numeric.problem({"answer": "Paris"}) and numeric.problem({}) == 'no "answer"'


def test_exact_and_normalized_strings():
    exact, normalized = build_evaluator("exact"), build_evaluator("normalized")
    assert exact.score("  Paris\n", {"answer": "Paris"}) == 1.0 and exact.score("paris", {"answer": "Paris"}) == 0.0
    assert normalized.score("The Paris!", {"answer": "paris"}) == 1.0
    assert normalized.score("Paris, France", {"answer": "paris"}) == 0.0


def test_sql_execution_accuracy_ignores_row_order_and_needs_the_same_rows(db):
    sql = build_evaluator("sql")
    gold = {"gold_sql": "SELECT name FROM items WHERE price > 2 ORDER BY name", "db_path": db}
    assert sql.score("```sql\nSELECT name FROM items WHERE price >= 2.5 ORDER BY price DESC\n```", gold) == 1.0
    assert sql.score("SELECT * FROM items WHERE price > 2", gold) == 0.0  # more columns: another result
    assert sql.score("SELECT name FROM items", gold) == 0.0 and sql.score("I don't know", gold) == 0.0
    assert sql.score("DELETE FROM items", gold) == 0.0  # refused by the read-only guard
    assert "gold_sql" in sql.problem({"db_path": db}) and sql.problem(gold) is None
    with pytest.raises(ValueError, match="gold query fails"):
        sql.score("SELECT 1", {"gold_sql": "SELECT nope FROM items", "db_path": db})


def test_json_fields_scores_the_share_of_fields_matched():
    fields = build_evaluator("json_fields")
    answer = {"name": "Ann Lee", "age": 34, "address": {"city": "Oslo"}}
    reply = 'Here: ```json\n{"name": "ann lee", "age": "34", "address": {"city": "Oslo"}, "extra": 1}\n```'
    assert fields.score(reply, {"answer": answer}) == 1.0
    assert fields.score('{"name": "Ann Lee", "age": 35}', {"answer": json.dumps(answer)}) == pytest.approx(1 / 3)
    assert fields.score("no json", {"answer": answer}) == 0.0
    assert "JSON object" in fields.problem({"answer": "Oslo"})


def test_labels_are_checked_per_task_and_missing_ones_name_the_line(tmp_path):
    evaluators = evaluators_for("numeric", "last_number", {"sql": TaskConfig(evaluator="sql"), "math": TaskConfig()})
    assert evaluators["sql"].name == "sql" and evaluators["math"].name == "numeric"
    records = [PromptRecord("q", {"answer": "4"}, task="math", source="e.jsonl:1"),
               PromptRecord("q", {"answer": "4"}, task="sql", source="e.jsonl:2")]
    check_eval_labels(records, "e.jsonl", evaluators)  # the math line is labeled: the sql task reports score only
    with pytest.raises(ValueError, match="no line has the label its task's evaluator needs"):
        check_eval_labels(records[1:], "e.jsonl", evaluators)
    single = evaluators_for("numeric", "last_number", {})
    with pytest.raises(ValueError, match=r"e.jsonl:2: this eval prompt lacks its label"):
        check_eval_labels([records[0], PromptRecord("q", {}, source="e.jsonl:2")], "e.jsonl", single)


def test_evaluate_hides_the_labels_from_the_scorers(tmp_path, db):
    engine = Engine(tiny_model_dir(tmp_path), EngineConfig(kv_cache_bytes=4 * 2**20, block_size=16))
    records = [PromptRecord("Cheap items?", {"gold_sql": "SELECT name FROM items", "db_path": db})]
    SEEN.clear()
    scorer = build_composite([{"name": "tests.rl.test_evaluators:context_keys"}])
    metrics = evaluate(engine, records, scorer, max_tokens=4, evaluator=build_evaluator("sql"))
    assert metrics["score"] == 1.0 and metrics["accuracy"] == 0.0  # a random tiny model writes no such query
    assert "db_path" in SEEN[0] and "gold_sql" not in SEEN[0]


def test_tune_summary_explains_eval_and_plots_each_scorer(tmp_path, capsys):
    model_dir = tiny_model_dir(tmp_path / "m")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hi."}, {"prompt": "Name a colour."}])
    evals = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "Say hi.", "answer": "hi"}])
    table = tune_table(model_dir, prompts, tmp_path / "run", steps=2)
    table["scoring"]["scorers"].append({"name": "forbidden_strings", "strings": ["zzz"], "weight": 0.5})
    table["data"]["eval"] = str(evals)
    table["run"]["evaluator"] = "normalized"
    table["probe"] = {"before_tune": False}
    assert main(["tune", "--config", str(to_toml(table, tmp_path / "tao.toml")), "--quiet"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert set(summary["eval_before"]) == {"score", "accuracy"}
    assert "not whether the answers are right" in summary["eval_explained"]["score"]
    assert "['normalized']" in summary["eval_explained"]["accuracy"]
    plots = {Path(p).name for p in summary["plots"]}
    assert {"scorer_rewards.png", "zero_variance.png", "reward_mean.png"} <= plots
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("score/length/mean" in r and "score/forbidden_strings/mean" in r for r in history)
