"""Text-to-SQL questions drawn from the templates (bench/quality/sql_templates.py) with parameter values taken from
the built databases, each checked on its database: the gold query runs, returns at least one row with a real value,
never the whole main table, and an ordered answer has no ties. Split by template instance: every template gives
its first instances to test and the rest to train, so both splits cover every template with different values.

`sql_messages` renders the prompt that every method (base, SFT, TAO) sees: the system prompt, one demonstration turn
on a small schema that is not one of the benchmark's databases, then the question's schema and question.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.quality.sql_templates import TEMPLATES, SqlTemplate
from tao_engine.scoring.sql import execute_readonly

SQL_SYSTEM_PROMPT = ("You are an expert SQLite developer. Given a database schema and a question, you write one "
                     "correct SQLite query that answers the question.")
MAX_LISTED_ROWS = 30  # a listing question with a longer answer is re-drawn: answers stay readable
TRAIN_PER_TEMPLATE = 5


# Why a demonstration: asked with the schema alone, SmolLM2-135M copies a CREATE TABLE into its reply on 47 of the
# 48 test questions (greedy), so every TAO group scored zero and had no signal (session 4's first cells). With one
# worked turn on an unrelated schema, 28 of 48 greedy replies are queries that run and return rows. The demonstration
# holds no benchmark table, column or answer.
DEMO_SCHEMA = ("CREATE TABLE pets (\n  pet_id INTEGER PRIMARY KEY,\n  name TEXT NOT NULL,\n  species TEXT NOT NULL,\n"
               "  age INTEGER NOT NULL\n);")
DEMO_QUESTION = "How many cats are older than 3?"
DEMO_ANSWER = "```sql\nSELECT COUNT(*) FROM pets WHERE species = 'cat' AND age > 3;\n```"


def sql_user_prompt(schema_sql: str, question: str) -> str:
    return (f"Database schema:\n{schema_sql}\n\nQuestion: {question}\n"
            "Answer with a single SQLite SELECT query in a ```sql code block.")


def sql_messages(schema_sql: str, question: str) -> list[dict[str, str]]:
    """The chat every method is prompted with (see DEMO_SCHEMA for why it holds a demonstration turn)."""
    return [{"role": "system", "content": SQL_SYSTEM_PROMPT},
            {"role": "user", "content": sql_user_prompt(DEMO_SCHEMA, DEMO_QUESTION)},
            {"role": "assistant", "content": DEMO_ANSWER},
            {"role": "user", "content": sql_user_prompt(schema_sql, question)}]


@dataclass(frozen=True)
class SqlQuestion:
    db: str
    question: str
    gold_sql: str
    difficulty: str
    template: str


def _rows(db_path: Path, sql: str) -> list[dict[str, Any]]:
    # trusted SQL of the templates (not a model's): the rows as dicts keyed by column name
    conn = sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        cursor = conn.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        conn.close()


def _candidates(template: SqlTemplate, db_path: Path) -> list[dict[str, Any]]:
    base = _rows(db_path, template.params) if isinstance(template.params, str) else list(template.params)
    keys, values = list(template.numbers), list(template.numbers.values())
    out = []
    for row in base:
        for combo in itertools.product(*values):
            params = {**row, **dict(zip(keys, combo, strict=True))}
            for name, value in params.items():
                if isinstance(value, str) and "'" in value:
                    raise ValueError(f"template {template.key}: parameter {name}={value!r} holds a quote")
            out.append(params)
    return out


def _valid(template: SqlTemplate, db_path: Path, params: Mapping[str, Any], table_rows: int) -> bool:
    gold = template.gold.format(**params)
    result = execute_readonly(db_path, gold, time_limit_s=5.0)
    if not result.ok:
        raise ValueError(f"template {template.key}: gold SQL fails ({result.error}): {gold}")
    rows = result.rows
    if not rows or len(rows) >= table_rows or len(rows) > MAX_LISTED_ROWS:
        return False
    if len(rows) == 1 and all(v is None or v == 0 for v in rows[0]):  # COUNT 0 / AVG of nothing: no question
        return False
    if template.order_keys is not None:
        keys = [next(iter(r.values())) for r in _rows(db_path, template.order_keys.format(**params))]
        head = keys[: int(params.get("n", len(keys))) + 1]
        if len(set(head)) != len(head) or len(keys) <= int(params.get("n", 0)):
            return False
    return True


def n_test_instances(template: SqlTemplate) -> int:
    """Test questions per template: 2 for the first template of each (database, difficulty) and for the second
    easy one, else 1; with 4 easy, 2 medium, 2 hard templates per database that is 12 per database."""
    same = [t.key for t in TEMPLATES if t.db == template.db and t.difficulty == template.difficulty]
    index = same.index(template.key)
    return 2 if index == 0 or (template.difficulty == "easy" and index == 1) else 1


def draw_instances(template: SqlTemplate, db_path: Path, count: int, seed: int) -> list[SqlQuestion]:
    """`count` distinct valid instances of `template`, in a seeded order; raises if the data cannot give them."""
    rng = random.Random(f"tao-bench-sql-q:{template.key}:{seed}")
    candidates = _candidates(template, db_path)
    rng.shuffle(candidates)
    table_rows = _rows(db_path, f"SELECT COUNT(*) AS n FROM {template.table}")[0]["n"]
    out: list[SqlQuestion] = []
    seen: set[str] = set()
    for params in candidates:
        if len(out) == count:
            break
        question = rng.choice(template.questions).format(**params)
        if question in seen or not _valid(template, db_path, params, table_rows):
            continue
        seen.add(question)
        out.append(SqlQuestion(template.db, question, template.gold.format(**params), template.difficulty,
                               template.key))
    if len(out) < count:
        raise ValueError(f"template {template.key}: only {len(out)} valid instances of the {count} needed")
    return out


def generate_questions(db_paths: Mapping[str, Path], seed: int = 0) -> tuple[list[SqlQuestion], list[SqlQuestion]]:
    """(train, test) questions over the databases in `db_paths` (name -> built .sqlite file), seeded order."""
    train: list[SqlQuestion] = []
    test: list[SqlQuestion] = []
    for template in TEMPLATES:
        n_test = n_test_instances(template)
        drawn = draw_instances(template, Path(db_paths[template.db]), n_test + TRAIN_PER_TEMPLATE, seed)
        test.extend(drawn[:n_test])
        train.extend(drawn[n_test:])
    rng = random.Random(f"tao-bench-sql-split:{seed}")
    rng.shuffle(train)
    rng.shuffle(test)
    overlap = {q.question for q in train} & {q.question for q in test}
    if overlap:
        raise AssertionError(f"SQL questions in both splits: {sorted(overlap)[:3]}")
    return train, test


def sql_record(question: SqlQuestion, db_path: Path, schema_sql: str) -> dict[str, Any]:
    """One JSONL line: the chat prompt plus the context the runner and the scorers read."""
    return {
        "messages": sql_messages(schema_sql, question.question),
        "db_path": str(Path(db_path).resolve()),
        "db": question.db,
        "question": question.question,
        "difficulty": question.difficulty,
        "gold_sql": question.gold_sql,
    }
