"""The quality benchmark's datasets (bench/quality): deterministic builds, sizes and coverage, disjoint splits,
every gold query runs and answers, execution accuracy's comparison rules, and math answers recomputed here."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from bench.quality.build_datasets import build_datasets, main
from bench.quality.math_problems import DEMO_PROBLEM, generate_problems, math_messages, math_user_prompt
from bench.quality.math_problems import TEMPLATES as MATH_TEMPLATES
from bench.quality.sql_databases import DB_NAMES, generate_rows, schema_sql
from bench.quality.sql_eval import execution_match, extract_sql
from bench.quality.sql_questions import DEMO_SCHEMA, SQL_SYSTEM_PROMPT, sql_messages
from tao_engine.scoring.sql import execute_readonly, has_top_level_order_by

SQL_KEYS = {"messages", "db_path", "db", "question", "difficulty", "gold_sql"}
MATH_KEYS = {"messages", "answer", "steps"}
ASKS_ORDER = re.compile(r"first[.?]|\bordered (?:by|from)\b|descending order")  # "cheapest first?", "ordered by price"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_datasets(tmp_path_factory.mktemp("quality_a"), seed=0)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(built, tmp_path, capsys):
    root_a = built["sql_dbs_dir"].parents[1]
    other = (tmp_path / "b").resolve()
    assert main(["--out", str(other), "--seed", "0"]) == 0  # the command line builds the same as the function
    assert "sql_test" in capsys.readouterr().out
    first = _digests(other)
    assert set(first) == {"sql/dbs/shop.sqlite", "sql/dbs/school.sqlite", "sql/dbs/library.sqlite",
                          "sql/dbs/flights.sqlite", "sql/train.jsonl", "sql/test.jsonl", "math/train.jsonl",
                          "math/test.jsonl"}
    paths = build_datasets(other, seed=0)  # rebuilt in place: the very same bytes
    assert _digests(other) == first
    for db in DB_NAMES:  # another folder: the databases are identical, the JSONL differ only by the db_path prefix
        name = Path("sql") / "dbs" / f"{db}.sqlite"
        assert (root_a / name).read_bytes() == (other / name).read_bytes()
    for key in ("sql_train", "sql_test", "math_train", "math_test"):
        assert built[key].read_text().replace(str(root_a), "<ROOT>") == \
            paths[key].read_text().replace(str(other), "<ROOT>")


def test_another_seed_gives_other_data():
    assert generate_rows("shop", seed=1) != generate_rows("shop", seed=0)
    assert [p.text for p in generate_problems(seed=1)[1]] != [p.text for p in generate_problems(seed=0)[1]]


def test_sizes_keys_and_coverage(built):
    sql_train, sql_test = _read(built["sql_train"]), _read(built["sql_test"])
    math_train, math_test = _read(built["math_train"]), _read(built["math_test"])
    assert (len(sql_train), len(sql_test), len(math_train), len(math_test)) == (160, 48, 160, 60)
    for split in (sql_train, sql_test):
        assert all(set(r) == SQL_KEYS for r in split)
        cells = Counter((r["db"], r["difficulty"]) for r in split)
        assert set(cells) == {(db, d) for db in DB_NAMES for d in ("easy", "medium", "hard")}
        easy = sum(n for (_, d), n in cells.items() if d == "easy")
        assert easy == len(split) // 2  # half the questions are one-table filters, counts, aggregates
    for split in (math_train, math_test):
        assert all(set(r) == MATH_KEYS for r in split)
        assert Counter(r["steps"] for r in split).keys() == {1, 2, 3}
        assert all(re.fullmatch(r"\d+", r["answer"]) for r in split)
    assert Counter(r["steps"] for r in math_test) == {1: 20, 2: 20, 3: 20}


def test_splits_share_no_question(built):
    sql = [{r["question"] for r in _read(built[k])} for k in ("sql_train", "sql_test")]
    assert len(sql[0]) == 160 and len(sql[1]) == 48  # no duplicate inside a split either
    assert not sql[0] & sql[1]
    math = [{r["messages"][-1]["content"] for r in _read(built[k])} for k in ("math_train", "math_test")]
    assert len(math[0]) == 160 and len(math[1]) == 60
    assert not math[0] & math[1]


def test_prompts_render_the_schema_and_question(built):
    for record in _read(built["sql_test"]):
        messages = record["messages"]
        assert messages == sql_messages(schema_sql(record["db"]), record["question"])
        assert messages[0] == {"role": "system", "content": SQL_SYSTEM_PROMPT}
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
        user = messages[-1]["content"]
        assert schema_sql(record["db"]) in user and user.endswith("in a ```sql code block.")
        assert f"Question: {record['question']}\n" in user
        assert Path(record["db_path"]).is_absolute() and Path(record["db_path"]).name == f"{record['db']}.sqlite"
        with sqlite3.connect(record["db_path"]) as conn:  # the prompt shows the database's real schema
            stored = [row[0] for row in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table'")]
        assert schema_sql(record["db"]) == ";\n\n".join(stored) + ";"
    for record in _read(built["math_test"]):
        assert record["messages"][-1]["content"].endswith("in the form: Answer: <number>")
        problem = record["messages"][-1]["content"].split("\nEnd with the final answer")[0]
        assert record["messages"] == math_messages(problem)


def test_demonstration_turns_hold_no_benchmark_table_or_answer(built):
    # The SQL demonstration is on a schema of none of the databases, so it cannot hint at a gold query.
    pets = re.search(r"CREATE TABLE (\w+)", DEMO_SCHEMA).group(1)
    for key in ("sql_train", "sql_test"):
        for record in _read(built[key]):
            assert pets not in re.findall(r"CREATE TABLE (\w+)", schema_sql(record["db"]))
            assert pets not in record["gold_sql"]
    # The math demonstration is no benchmark problem.
    problems = {r["messages"][-1]["content"] for k in ("math_train", "math_test") for r in _read(built[k])}
    assert math_user_prompt(DEMO_PROBLEM) not in problems


def test_every_gold_query_answers_without_returning_a_whole_table(built):
    for key in ("sql_train", "sql_test"):
        for record in _read(built[key]):
            result = execute_readonly(record["db_path"], record["gold_sql"], time_limit_s=5.0)
            assert result.ok and result.rows, record
            assert any(v not in (None, 0) for v in result.rows[0]), record
            main_table = re.search(r"\bFROM\s+(\w+)", record["gold_sql"]).group(1)
            total = execute_readonly(record["db_path"], f"SELECT COUNT(*) FROM {main_table}").rows[0][0]
            assert len(result.rows) < total, record
            # ORDER BY exactly when the question asks for an order
            asks_order = ASKS_ORDER.search(record["question"]) is not None
            assert has_top_level_order_by(record["gold_sql"]) == asks_order, record
            assert execution_match(record["db_path"], record["gold_sql"], record["gold_sql"])


@pytest.fixture(scope="module")
def shop(built) -> Path:
    return built["sql_dbs_dir"] / "shop.sqlite"


def test_execution_match_accepts_equivalent_queries(shop):
    gold = "SELECT COUNT(*) FROM customers WHERE city = 'Paris'"
    assert execution_match(shop, "SELECT COUNT(customer_id) FROM customers WHERE city IN ('Paris')", gold)
    assert execution_match(shop, "select count(*) from customers where 'Paris' = city;", gold)
    avg = "SELECT AVG(price) FROM products WHERE category = 'Toys'"
    assert execution_match(shop, "SELECT SUM(price) / COUNT(*) FROM products WHERE category = 'Toys'", avg)
    listing = "SELECT name FROM products WHERE category = 'Toys' AND price < 50"
    assert execution_match(shop, "SELECT name FROM products WHERE price < 50 AND category = 'Toys' "
                                 "ORDER BY name DESC", listing)  # gold unordered: any order matches
    assert execution_match(shop, "SELECT 0.1 + 0.2", "SELECT 0.3")  # floats rounded to 6 decimals
    assert execution_match(shop, "SELECT 3.0", "SELECT 3")


def test_execution_match_rejects_wrong_and_broken_queries(shop):
    gold = "SELECT COUNT(*) FROM customers WHERE city = 'Paris'"
    paris = execute_readonly(shop, gold).rows[0][0]
    lyon = execute_readonly(shop, "SELECT COUNT(*) FROM customers WHERE city = 'Lyon'").rows[0][0]
    assert paris != lyon
    assert not execution_match(shop, "SELECT COUNT(*) FROM customers WHERE city = 'Lyon'", gold)
    assert not execution_match(shop, "SELECT COUNT(*), 1 FROM customers WHERE city = 'Paris'", gold)  # extra column
    assert not execution_match(shop, "SELECT COUNT(*) FROM customers WHERE city = 'Paris' UNION ALL SELECT 1", gold)
    assert not execution_match(shop, "SELEC COUNT(*) FROM customers", gold)  # syntax error
    assert not execution_match(shop, "SELECT COUNT(*) FROM clients", gold)  # no such table
    assert not execution_match(shop, "DELETE FROM customers", gold)  # refused, and the file is read-only
    assert not execution_match(shop, None, gold)
    assert not execution_match(shop, "   ", gold)
    assert not execution_match(shop, "SELECT 0.3001", "SELECT 0.3")
    with pytest.raises(ValueError, match="gold SQL"):
        execution_match(shop, gold, "SELECT nothing FROM nowhere")


def test_execution_match_is_order_sensitive_only_for_ordered_gold(shop):
    ordered = "SELECT name FROM products WHERE category = 'Toys' ORDER BY price DESC"
    assert execution_match(shop, "SELECT name FROM products WHERE category = 'Toys' ORDER BY price DESC", ordered)
    assert not execution_match(shop, "SELECT name FROM products WHERE category = 'Toys' ORDER BY price ASC", ordered)
    assert not execution_match(shop, "SELECT name FROM products WHERE category = 'Toys' ORDER BY name", ordered)
    unordered = "SELECT name FROM products WHERE category = 'Toys'"
    assert execution_match(shop, "SELECT name FROM products WHERE category = 'Toys' ORDER BY price ASC", unordered)
    # an ORDER BY inside a subquery does not make the gold ordered
    sub = "SELECT name FROM (SELECT name FROM products WHERE category = 'Toys' ORDER BY price DESC LIMIT 3)"
    assert execution_match(shop, "SELECT name FROM (SELECT name, price FROM products WHERE category = 'Toys' "
                                 "ORDER BY price DESC LIMIT 3) ORDER BY name", sub)


def test_extract_sql():
    assert extract_sql("Here:\n```sql\nSELECT 1\n```\nbetter:\n```sql\nSELECT 2;\n```") == "SELECT 2;"
    assert extract_sql("```\nSELECT name FROM t\n```") == "SELECT name FROM t"
    assert extract_sql("The query is:\nSELECT COUNT(*) FROM t WHERE x = 1;\nThat counts them.") == \
        "SELECT COUNT(*) FROM t WHERE x = 1"
    assert extract_sql("I do not know.") is None


# Answers recomputed here from each problem's values, apart from the generator's own formulas.
RECOMPUTE = {
    "add": lambda v: v["a"] + v["b"],
    "subtract": lambda v: v["a"] - v["b"],
    "multiply": lambda v: v["a"] * v["b"],
    "divide": lambda v: v["total"] / v["friends"],
    "unit_cost": lambda v: v["a"] * v["b"],
    "packs_give": lambda v: v["packs"] * v["per"] - v["given"],
    "train_seats": lambda v: v["cars"] * v["seats"] - v["empty"],
    "wage": lambda v: v["wage"] * v["h1"] + v["wage"] * v["h2"],
    "fruit_bags": lambda v: (v["apples"] + v["oranges"]) / v["size"],
    "reading": lambda v: v["per_day"] * v["days"] + v["last"],
    "change": lambda v: v["bill"] - (v["shirts"] * v["shirt_price"] + v["hats"] * v["hat_price"]),
    "teams": lambda v: (v["classes"] * v["size"] - v["absent"]) / v["teams"],
    "crates": lambda v: v["start"] + v["crates"] * v["per"] - v["sold"],
    "gifts": lambda v: (v["weekly"] * v["weeks"] - v["spent"]) / v["gifts"],
    "tomatoes": lambda v: v["rows"] * v["plants"] * v["per_plant"] - v["bad"],
}


def test_math_answers_recomputed(built):
    assert set(RECOMPUTE) == {t.key for t in MATH_TEMPLATES}
    assert Counter(t.steps for t in MATH_TEMPLATES) == {1: 5, 2: 5, 3: 5}
    train, test = generate_problems(seed=0)
    records = _read(built["math_train"]) + _read(built["math_test"])
    assert [r["answer"] for r in records] == [str(p.answer) for p in train + test]  # the files hold these problems
    for problem, record in zip(train + test, records, strict=True):
        exact = RECOMPUTE[problem.template](problem.values)
        assert exact == int(exact) and exact >= 0, problem  # integer (divisions exact), never negative
        assert problem.answer == int(exact) and record["steps"] == problem.steps
        assert record["messages"] == math_messages(problem.text)
        for value in problem.values.values():
            assert str(value) in problem.text, (value, problem.text)
