"""The quality suite's tasks: four chosen inside SmolLM2-135M's competence band (greedy accuracy 5-50%, pass@16 at
the sampling temperature at least twice that: each module's docstring gives what was measured before choosing it),
and the earlier benchmark's SQL and math tasks, kept as the below-competence contrast.

A `SuiteTask` is what every method needs of a task: its label-free scorer specs (TAO, best-of-N SFT, the probe),
how a reply is checked against the hidden gold (evaluation and diagnostics only), the gold completion SFT trains
on, the token budget, and the sampling temperature TAO uses on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench.quality import task_arith, task_extract, task_passage_qa, task_table_sql

IsCorrect = Callable[[str, Mapping[str, Any], Mapping[str, Any]], bool]  # (reply, gold, context) -> right?

COMPETENCE_TASKS = ("extract", "arith", "table_sql", "passage_qa")
CONTRAST_TASKS = ("sql", "math")  # the earlier benchmark's tasks: below SmolLM2-135M's competence


@dataclass(frozen=True)
class SuiteTask:
    name: str
    scorers: tuple[Mapping[str, Any], ...]  # [[scoring.scorers]] tables: label-free
    check: IsCorrect
    gold: Callable[[Mapping[str, Any]], str]  # the completion SFT imitates
    max_tokens: int
    temperature: float = 0.7
    contrast: bool = False

    def is_correct(self, reply: str, gold: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
        return self.check(reply, gold, context)

    def gold_completion(self, gold: Mapping[str, Any]) -> str:
        return self.gold(gold)


def _module_task(name: str, module: Any, temperature: float = 0.7) -> SuiteTask:
    return SuiteTask(name, tuple(module.SCORERS), module.is_correct, module.gold_completion, module.MAX_TOKENS,
                     temperature)


def _contrast_task(name: str) -> SuiteTask:
    from bench.quality.tasks import get_task

    old = get_task(name)
    return SuiteTask(name, tuple(old.rule_scorers), old.is_correct, old.gold_completion,
                     {"sql": 64, "math": 80}[name], contrast=True)


def get_suite_task(name: str) -> SuiteTask:
    makers = {
        "extract": lambda: _module_task("extract", task_extract),
        "arith": lambda: _module_task("arith", task_arith),
        "table_sql": lambda: _module_task("table_sql", task_table_sql),
        "passage_qa": lambda: _module_task("passage_qa", task_passage_qa),
        "sql": lambda: _contrast_task("sql"),
        "math": lambda: _contrast_task("math"),
    }
    if name not in makers:
        raise ValueError(f"unknown task {name!r}; tasks are {list(makers)}")
    return makers[name]()
