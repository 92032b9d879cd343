"""Single-table text-to-SQL on three small SQLite databases (employees, products, books), one table each.

Measured on SmolLM2-135M-Instruct before choosing it (40 questions on the employees table, the prompt below with
one demonstration turn on another schema): greedy execution accuracy 0.05, pass@16 at T 0.7 0.55, and the largest
result-set cluster of 16 samples is right for 0.325 of the questions: the group agrees on the right answer far more
often than the greedy reply is right, which is what result-set agreement can teach.

correct: the extracted query returns the gold query's rows (bench/quality/sql_eval.execution_match).
label-free reward: the "sql" verifier (runs read-only, returns rows, none of the gamed shapes), "sql_agreement"
(the share of the group returning the same result set) and a format rule (one ```sql block).
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.quality.splits import Splits, draw_splits

INSTRUCTION = "Write one SQLite query that answers the question. Reply with the query in a ```sql block."
DEMO_SCHEMA = "CREATE TABLE pets (id INTEGER PRIMARY KEY, name TEXT, species TEXT, age INTEGER);"
DEMOS = (("How many pets are older than 5?", "```sql\nSELECT COUNT(*) FROM pets WHERE age > 5\n```"),
         ("List the names of the cats.", "```sql\nSELECT name FROM pets WHERE species = 'cat'\n```"))
SCORERS = (
    {"name": "sql", "weight": 0.5},
    {"name": "sql_agreement", "mode": "fraction", "weight": 1.0},
    {"name": "regex", "label": "format", "pattern": r"^\s*```sql\n[\s\S]+?\n```\s*$", "weight": 0.25},
)
MAX_TOKENS = 48

CITIES = ("Denver", "Lisbon", "Oslo", "Austin", "Dublin", "Lyon")
DEPARTMENTS = ("Sales", "Engineering", "Support", "Marketing", "Finance")
CATEGORIES = ("kitchen", "garden", "toys", "office", "sports")
GENRES = ("mystery", "fantasy", "history", "poetry", "science")
FIRST = ("Ana", "Ben", "Carla", "Dev", "Eva", "Finn", "Gina", "Hugo", "Iris", "Jack", "Kara", "Liam", "Mona", "Nils",
         "Olga", "Paul", "Rosa", "Sam", "Tara", "Uma", "Vic", "Wes", "Yara", "Zed")
WORDS = ("Silver", "River", "Quiet", "Broken", "Golden", "Winter", "Hidden", "Last", "Little", "Night")
NOUNS = ("Lamp", "Garden", "Road", "Clock", "Harbor", "Forest", "Bridge", "Letter", "Mountain", "Door")


@dataclass(frozen=True)
class Question:
    text: str  # the question, with {v} where the drawn value goes
    sql: str  # its gold query, with {v} too
    value: Callable[[random.Random], Any]  # draws v


@dataclass(frozen=True)
class Table:
    name: str
    schema: str
    rows: Callable[[random.Random], list[tuple[Any, ...]]]
    questions: tuple[Question, ...]


def _employees(rng: random.Random) -> list[tuple[Any, ...]]:
    return [(i + 1, name, rng.choice(DEPARTMENTS), rng.choice(CITIES), rng.randrange(40, 130) * 1000,
             rng.randint(22, 64)) for i, name in enumerate(FIRST)]


def _products(rng: random.Random) -> list[tuple[Any, ...]]:
    names = [f"{w} {n}" for w in WORDS[:5] for n in NOUNS[:6]]
    return [(i + 1, name, rng.choice(CATEGORIES), rng.randint(3, 250), rng.randint(0, 60))
            for i, name in enumerate(names)]


def _books(rng: random.Random) -> list[tuple[Any, ...]]:
    titles = [f"The {w} {n}" for w in WORDS[5:] for n in NOUNS[4:]]
    return [(i + 1, title, rng.choice(FIRST), rng.choice(GENRES), rng.randint(1950, 2023), rng.randint(90, 900))
            for i, title in enumerate(titles)]


def _pick(pool: tuple[str, ...]) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(pool)


def _between(low: int, high: int, step: int = 1) -> Callable[[random.Random], int]:
    return lambda rng: rng.randrange(low, high + 1, step)


TABLES = (
    Table("employees", "CREATE TABLE employees (id INTEGER PRIMARY KEY, name TEXT, department TEXT, city TEXT, "
          "salary INTEGER, age INTEGER);", _employees, (
              Question("List the names of the employees in the {v} department.",
                       "SELECT name FROM employees WHERE department = '{v}'", _pick(DEPARTMENTS)),
              Question("How many employees work in {v}?", "SELECT COUNT(*) FROM employees WHERE city = '{v}'",
                       _pick(CITIES)),
              Question("What is the highest salary in the {v} department?",
                       "SELECT MAX(salary) FROM employees WHERE department = '{v}'", _pick(DEPARTMENTS)),
              Question("List the names of the employees older than {v}.", "SELECT name FROM employees WHERE age > {v}",
                       _between(30, 58)),
              Question("What is the average age of the employees in {v}?",
                       "SELECT AVG(age) FROM employees WHERE city = '{v}'", _pick(CITIES)),
              Question("Which employees earn more than {v}? Give their names.",
                       "SELECT name FROM employees WHERE salary > {v}", _between(60_000, 120_000, 1000)),
          )),
    Table("products", "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, category TEXT, price INTEGER, "
          "stock INTEGER);", _products, (
              Question("List the names of the products in the {v} category.",
                       "SELECT name FROM products WHERE category = '{v}'", _pick(CATEGORIES)),
              Question("How many products cost less than {v}?", "SELECT COUNT(*) FROM products WHERE price < {v}",
                       _between(20, 220)),
              Question("What is the cheapest price in the {v} category?",
                       "SELECT MIN(price) FROM products WHERE category = '{v}'", _pick(CATEGORIES)),
              Question("Which products have more than {v} in stock? Give their names.",
                       "SELECT name FROM products WHERE stock > {v}", _between(5, 50)),
              Question("What is the total stock of the {v} products?",
                       "SELECT SUM(stock) FROM products WHERE category = '{v}'", _pick(CATEGORIES)),
          )),
    Table("books", "CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT, author TEXT, genre TEXT, year INTEGER, "
          "pages INTEGER);", _books, (
              Question("List the titles of the {v} books.", "SELECT title FROM books WHERE genre = '{v}'",
                       _pick(GENRES)),
              Question("How many books were published after {v}?", "SELECT COUNT(*) FROM books WHERE year > {v}",
                       _between(1960, 2015)),
              Question("What is the largest number of pages of a {v} book?",
                       "SELECT MAX(pages) FROM books WHERE genre = '{v}'", _pick(GENRES)),
              Question("Which books have fewer than {v} pages? Give their titles.",
                       "SELECT title FROM books WHERE pages < {v}", _between(150, 800)),
              Question("How many books did {v} write?", "SELECT COUNT(*) FROM books WHERE author = '{v}'",
                       _pick(FIRST)),
          )),
)


def build_databases(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """One SQLite file per table, rebuilt from scratch (the same bytes for the same seed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for table in TABLES:
        path = out_dir / f"{table.name}.sqlite"
        path.unlink(missing_ok=True)
        rows = table.rows(random.Random(f"tao-bench-table-sql-{table.name}:{seed}"))
        con = sqlite3.connect(path)
        try:
            con.execute(table.schema)
            con.executemany(f"INSERT INTO {table.name} VALUES ({', '.join('?' * len(rows[0]))})", rows)
            con.commit()
        finally:
            con.close()
        paths[table.name] = path.resolve()
    return paths


def messages(schema: str, question: str) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for demo_question, demo_answer in DEMOS:
        turns += [{"role": "user", "content": f"{INSTRUCTION}\n\nSchema:\n{DEMO_SCHEMA}\n\nQuestion: {demo_question}"},
                  {"role": "assistant", "content": demo_answer}]
    return [*turns, {"role": "user", "content": f"{INSTRUCTION}\n\nSchema:\n{schema}\n\nQuestion: {question}"}]


def _usable(db: Path, table: str, gold: str) -> bool:
    """The gold query returns at least one non-NULL value and not the whole table (a listing of every row)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(gold).fetchall()
        total = con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        con.close()
    return bool(rows) and any(v is not None for row in rows for v in row) and len(rows) < total


def generate(db_paths: Mapping[str, Path], seed: int = 0, sizes: dict[str, int] | None = None) -> Splits:
    def draw(rng: random.Random) -> dict[str, Any]:
        while True:
            table = rng.choice(TABLES)
            template = rng.choice(table.questions)
            value = template.value(rng)
            question, gold = template.text.format(v=value), template.sql.format(v=value)
            if _usable(db_paths[table.name], table.name, gold):
                return {"messages": messages(table.schema, question), "db_path": str(db_paths[table.name]),
                        "question": question, "gold_sql": gold}

    return draw_splits(draw, lambda r: r["question"], "table_sql", seed, sizes)


def is_correct(reply: str, gold: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    from bench.quality.sql_eval import execution_match, extract_sql

    predicted = extract_sql(reply)
    return predicted is not None and bool(execution_match(context["db_path"], predicted, gold["gold_sql"]))


def gold_completion(gold: Mapping[str, Any]) -> str:
    return f"```sql\n{gold['gold_sql']}\n```"
