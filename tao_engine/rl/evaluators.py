"""How an eval reply is checked against its label: `[run] evaluator` (or `[tasks.<name>] evaluator` per task).

    numeric      "answer" is a number; the reply's number (read by [run] eval_extractor) equals it (rel. 1e-9)
    exact        the reply, stripped, is "answer" exactly
    normalized   the reply equals "answer" once both are case-folded, stripped of punctuation and articles, and their
                 whitespace collapsed (SQuAD's exact match)
    sql          the reply's SQL and the line's "gold_sql", both run read-only on its "db_path", give the same rows in
                 any order (execution accuracy)
    json_fields  "answer" is a JSON object; the share of its fields (nested ones by path) that the reply's JSON gives
                 the same value (numbers by value, strings normalized)

Each gives a score in [0, 1] per eval prompt (1 = right); `eval_accuracy` is their mean. The label keys never reach
the scorers. Labels are used only here, to monitor a run, never to train.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

EVALUATORS = ("numeric", "exact", "normalized", "sql", "json_fields")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
SQL_TIME_LIMIT_S = 5.0  # a gold query is trusted but bounded like any other
SQL_MAX_ROWS = 100_000


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and English articles dropped, whitespace collapsed."""
    return " ".join(_ARTICLES.sub(" ", str(text).casefold().translate(_PUNCTUATION)).split())


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip().replace(",", ""))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def extract_answer(text: str, extractor: str) -> str | None:
    from tao_engine.scoring import extract

    if extractor == "exact":
        return text.strip()
    fn = getattr(extract, extractor, None)
    if fn is None:
        raise ValueError(f"evaluate: unknown extractor {extractor!r}")
    return fn(text)


def answers_match(predicted: str | None, expected: Any) -> bool:
    if predicted is None or expected is None:
        return False
    a, b = str(predicted).strip().replace(",", ""), str(expected).strip().replace(",", "")
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    except ValueError:
        return a == b


@dataclass(frozen=True)
class NumericEvaluator:
    name: ClassVar[str] = "numeric"
    label_keys: ClassVar[tuple[str, ...]] = ("answer",)
    extractor: str = "boxed_or_last_number"

    def problem(self, context: Mapping[str, Any]) -> str | None:
        answer = context.get("answer")
        if answer is None:
            return 'no "answer"'
        return None if _number(answer) is not None else f'"answer" {answer!r} is not a number (evaluator "numeric")'

    def score(self, reply: str, context: Mapping[str, Any]) -> float:
        got, want = _number(extract_answer(reply, self.extractor)), _number(context["answer"])
        return float(got is not None and want is not None and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9))


@dataclass(frozen=True)
class ExactEvaluator:
    name: ClassVar[str] = "exact"
    label_keys: ClassVar[tuple[str, ...]] = ("answer",)

    def problem(self, context: Mapping[str, Any]) -> str | None:
        return None if isinstance(context.get("answer"), str) else 'no "answer" string'

    def score(self, reply: str, context: Mapping[str, Any]) -> float:
        return float(reply.strip() == context["answer"].strip())


@dataclass(frozen=True)
class NormalizedEvaluator(ExactEvaluator):
    name: ClassVar[str] = "normalized"

    def score(self, reply: str, context: Mapping[str, Any]) -> float:
        return float(normalize_answer(reply) == normalize_answer(context["answer"]))


@dataclass(frozen=True)
class SqlEvaluator:
    name: ClassVar[str] = "sql"
    label_keys: ClassVar[tuple[str, ...]] = ("gold_sql",)

    def problem(self, context: Mapping[str, Any]) -> str | None:
        missing = [key for key in ("gold_sql", "db_path") if not isinstance(context.get(key), str)]
        if not missing:
            return None
        return f"no {' or '.join(repr(k) for k in missing)} (evaluator \"sql\" runs gold_sql on db_path)"

    def score(self, reply: str, context: Mapping[str, Any]) -> float:
        from tao_engine.scoring.extract import get_extractor
        from tao_engine.scoring.sql_exec import execute_readonly

        sql = get_extractor("sql")(reply)
        if sql is None:
            return 0.0
        db = context["db_path"]
        gold = execute_readonly(db, context["gold_sql"], SQL_TIME_LIMIT_S, SQL_MAX_ROWS, keep_rows=False)
        if not gold.ok:
            raise ValueError(f"evaluator sql: the gold query fails on {db}: {gold.error}; fix the eval line's "
                             "gold_sql")
        got = execute_readonly(db, sql, SQL_TIME_LIMIT_S, SQL_MAX_ROWS, keep_rows=False)
        return float(got.ok and got.result_key(ordered=False) == gold.result_key(ordered=False))


@dataclass(frozen=True)
class JsonFieldsEvaluator:
    name: ClassVar[str] = "json_fields"
    label_keys: ClassVar[tuple[str, ...]] = ("answer",)

    def problem(self, context: Mapping[str, Any]) -> str | None:
        fields = _expected_fields(context.get("answer"))
        return None if fields else '"answer" is not a JSON object with fields (evaluator "json_fields")'

    def score(self, reply: str, context: Mapping[str, Any]) -> float:
        from tao_engine.scoring.extract import get_extractor

        expected = _expected_fields(context["answer"])
        parsed = get_extractor("json")(reply)
        try:
            got = _flatten(json.loads(parsed)) if parsed is not None else {}
        except (TypeError, ValueError):
            got = {}
        hits = sum(path in got and _same_value(got[path], value) for path, value in expected.items())
        return hits / len(expected)


def _expected_fields(answer: Any) -> dict[str, Any]:
    if isinstance(answer, str):
        try:
            answer = json.loads(answer)
        except ValueError:
            return {}
    return _flatten(answer) if isinstance(answer, Mapping) else {}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [2]} -> {"a.b": 1, "c": [2]}: nested objects by path, lists compared whole."""
    if not isinstance(value, Mapping):
        return {prefix: value} if prefix else {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out.update(_flatten(item, path) if isinstance(item, Mapping) and item else {path: item})
    return out


def _same_value(got: Any, want: Any) -> bool:
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_same_value, got, want))
    a, b = _number(got), _number(want)
    if a is not None and b is not None and not isinstance(got, str) and not isinstance(want, str):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(got, str) or isinstance(want, str):
        return normalize_answer(str(got)) == normalize_answer(str(want))
    return got == want


def build_evaluator(name: str, extractor: str = "boxed_or_last_number") -> Any:
    """The evaluator called `name` (EVALUATORS); `extractor` reads the number for "numeric"."""
    if name == "numeric":
        return NumericEvaluator(extractor)
    kinds = {"exact": ExactEvaluator, "normalized": NormalizedEvaluator, "sql": SqlEvaluator,
             "json_fields": JsonFieldsEvaluator}
    if name not in kinds:
        raise ValueError(f"evaluator must be one of {EVALUATORS}, got {name!r}")
    return kinds[name]()


def evaluators_for(run_evaluator: str, extractor: str, tasks: Mapping[str, Any]) -> dict[str | None, Any]:
    """{None: the run's evaluator, task: its `[tasks.<name>] evaluator` or the run's}."""
    default = build_evaluator(run_evaluator, extractor)
    out: dict[str | None, Any] = {None: default}
    for name, task in tasks.items():
        kind = getattr(task, "evaluator", None)
        out[name] = build_evaluator(kind, extractor) if kind is not None else default
    return out


def check_eval_labels(records: Sequence[Any], path: Any, evaluators: Mapping[str | None, Any]) -> None:
    """Every eval line carries the label its evaluator needs (single task); with tasks, some line does (a task without
    labels, such as open chat, reports its label-free score only). Errors name the file line and the missing key."""
    if set(evaluators) == {None}:
        check_eval_answers(records, path, every=True, evaluator=evaluators[None])
        return
    problems = [(r, evaluators.get(r.task, evaluators[None])) for r in records]
    problems = [(r, e, e.problem(r.context)) for r, e in problems]
    if all(why is not None for _, _, why in problems):
        record, evaluator, why = problems[0]
        raise ValueError(f"[data] eval {path}: no line has the label its task's evaluator needs ({record.source or '?'}"
                         f": {why}, evaluator {evaluator.name!r}); give eval prompts their labels, or leave [data] "
                         "eval out")


def check_eval_answers(records: Sequence[Any], path: Any, every: bool, evaluator: Any = None) -> None:
    """An eval file is a labeled probe: without labels its eval_score would be only the label-free reward of greedy
    answers, reported as if it measured something. The labels are what `evaluator` needs (tao_engine.rl.evaluators;
    None: a numeric "answer"). `every`: each line needs them (a single-task run, where a missing label would count as
    a miss); otherwise (per-task evals) at least one line."""
    if evaluator is None:
        evaluator = NumericEvaluator()
    problems = [(r.source or "?", evaluator.problem(r.context)) for r in records]
    missing = [(where, why) for where, why in problems if why is not None]
    if len(missing) == len(records):
        raise ValueError(f"[data] eval {path}: no line has the label evaluator {evaluator.name!r} needs ("
                         f"{missing[0][0]}: {missing[0][1]}); give each eval prompt its label, or leave [data] eval "
                         "out")
    if every and missing:
        raise ValueError(f"{missing[0][0]}: this eval prompt lacks its label: {missing[0][1]} ({len(missing)} of "
                         f"{len(records)} lines); give each eval prompt its label for evaluator {evaluator.name!r}")


def explain_eval(evaluators: Mapping[str | None, Any]) -> dict[str, str]:
    """What the eval numbers of a run mean, for its summary."""
    names = sorted({e.name for e in evaluators.values()})
    return {
        "score": "the mean label-free reward the run's own scorers give the greedy answers to the eval prompts: what "
                 "tuning raises, not whether the answers are right (a gamed reward raises it too)",
        "accuracy": f"the share of eval prompts answered right against their labels by evaluator(s) {names} "
                    "(json_fields: the mean share of fields matched); compare before and after",
    }
