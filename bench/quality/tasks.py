"""The two benchmark tasks: how an answer is checked against the hidden gold (evaluation and diagnostics only), the
gold completion that SFT trains on, and the label-free scorer specs that TAO trains with.

SQL  - correct: the extracted query's result equals the gold query's (quality.sql_eval.execution_match).
       label-free reward: the "sql" verifier's executes + returns-rows parts, the "sql_agreement" result-set
       majority over the group, and a format rule (one ```sql block).
math - correct: the extracted final number equals the answer (tao_engine.rl.evaluators answers_match).
       label-free reward: "majority_vote" over the final numbers (TTRL) and a format rule (a final "Answer: <n>").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tao_engine.rl.evaluators import answers_match, extract_answer

TASKS = ("sql", "math")
MATH_EXTRACTOR = "boxed_or_last_number"

SQL_RUBRIC = (
    "The response must be one SQLite query in a ```sql block that answers the question exactly on the schema "
    "given: the right tables, columns, filters and aggregates, and nothing else."
)
MATH_RUBRIC = (
    "The response must solve the word problem with correct arithmetic, step by step, and end with the final "
    "numeric answer."
)


@dataclass(frozen=True)
class Task:
    name: str
    rule_scorers: tuple[Mapping[str, Any], ...]  # [[scoring.scorers]] tables, as in a TAO TOML
    rubric: str  # for the LLM judge

    def is_correct(self, completion: str, gold: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
        if self.name == "sql":
            from bench.quality.sql_eval import execution_match, extract_sql

            predicted = extract_sql(completion)
            return predicted is not None and bool(execution_match(context["db_path"], predicted, gold["gold_sql"]))
        return answers_match(extract_answer(completion, MATH_EXTRACTOR), gold["answer"])

    def gold_completion(self, gold: Mapping[str, Any]) -> str:
        """The completion SFT imitates: what the prompt asks a model to write, built from the labels."""
        if self.name == "sql":
            return f"```sql\n{gold['gold_sql'].strip()}\n```"
        return f"Answer: {gold['answer']}"  # the records hold the answer only, no worked solution

    def judge_scorers(self, engine: Any, max_tokens: int) -> tuple[Mapping[str, Any], ...]:
        """The LLM judge on the policy's own engine (the very module being tuned), plus the task's format rule."""
        judge = {"name": "judge_pointwise", "engine": engine, "rubric": self.rubric, "max_tokens": max_tokens,
                 "min_score": 0, "max_score": 10, "weight": 0.1}  # 0..10 -> 0..1, the scale of the rules
        return (judge, self.rule_scorers[-1])


def get_task(name: str) -> Task:
    if name == "sql":
        return Task("sql", (
            {"name": "sql", "executes_weight": 1.0, "rows_weight": 1.0, "agreement_weight": 0.0, "weight": 0.5},
            {"name": "sql_agreement", "mode": "fraction", "weight": 1.0},
            {"name": "regex", "label": "format", "pattern": r"^\s*```sql\n[\s\S]+?\n```\s*$", "weight": 0.25},
        ), SQL_RUBRIC)
    if name == "math":
        return Task("math", (
            {"name": "majority_vote", "extractor": MATH_EXTRACTOR, "weight": 1.0},
            {"name": "regex", "label": "format", "pattern": r"Answer:\s*-?\d+\s*$", "weight": 0.25},
        ), MATH_RUBRIC)
    raise ValueError(f"unknown task {name!r}; tasks are {TASKS}")
