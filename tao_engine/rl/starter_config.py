"""`tao-engine init-config --kind math|sql|json|text`: a commented TAO config to start from, for one kind of task.

Each kind sets only what matters for it (scorers, evaluator, lengths, LoRA, a few steps); every value written is
commented with its field's meaning, read from the dataclasses as `--help-config` reads it, so the comments cannot
drift from the code. The file loads as it is once the prompts file exists.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tao_engine.config_docs import field_docs
from tao_engine.rl.config_help import PURPOSES
from tao_engine.rl.tao_config import _SECTIONS as SECTIONS

KINDS = ("math", "sql", "json", "text")


@dataclass(frozen=True)
class Starter:
    about: str  # what the prompts (and eval) files hold for this kind
    values: dict[str, dict[str, Any]]  # section -> field -> value, written as they are
    optional: dict[str, dict[str, Any]] = field(default_factory=dict)  # written commented out
    scorers: tuple[tuple[str, dict[str, Any]], ...] = ()  # (why, scorer table)


def _common(kind: str, max_tokens: int, evaluator: str, **run: Any) -> dict[str, dict[str, Any]]:
    return {
        "model": {"path": "smollm2"},
        "data": {"prompts": "prompts.jsonl", "prompts_per_step": 8},
        "sampling": {"n": 8, "temperature": 1.0, "max_tokens": max_tokens},
        "algorithm": {"name": "grpo"},
        "lora": {"r": 16, "alpha": 32.0},
        "run": {"steps": 20, "output_dir": f"runs/{kind}", "checkpoint_every": 5, "evaluator": evaluator, **run},
    }


STARTERS: dict[str, Starter] = {
    "math": Starter(
        about='prompts.jsonl: {"prompt": "A farmer has 12 cows ..."} a line, no answers. eval.jsonl (optional, '
              'never trained on): the same with "answer": "42".',
        values=_common("math", 256, "numeric", eval_extractor="boxed_or_last_number"),
        optional={"data": {"eval": "eval.jsonl", "system_prompt": "Solve the problem step by step and put the final "
                                                                  "answer in \\boxed{}."}},
        scorers=(("the answer most of the group agrees on (TTRL)", {"name": "majority_vote",
                                                                     "extractor": "boxed_or_last_number"}),
                 ("a bounded length, lightly weighted", {"name": "length", "max_length": 1200, "weight": 0.2})),
    ),
    "sql": Starter(
        about='prompts.jsonl: {"prompt": "<schema and question>", "db_path": "shop.db"} a line (the scorers run the '
              'replies on db_path, read-only). eval.jsonl (optional): the same with "gold_sql": "SELECT ...".',
        values=_common("sql", 192, "sql"),
        optional={"data": {"eval": "eval.jsonl"}},
        scorers=(("runs, returns rows, agrees with the group, names the question's terms; SELECT * and always-true "
                  "queries penalized", {"name": "sql"}),
                 ("the group's majority result set", {"name": "sql_agreement", "weight": 0.5})),
    ),
    "json": Starter(
        about='prompts.jsonl: {"prompt": "Extract ... as JSON: <text>", "schema": {<JSON Schema>}, "source": '
              '"<text>"} a line. eval.jsonl (optional): the same with "answer": {<the expected fields>}.',
        values=_common("json", 256, "json_fields"),
        optional={"data": {"eval": "eval.jsonl"}},
        scorers=(("valid JSON that validates against the line's schema", {"name": "json_schema"}),
                 ("values copied from the source, not made up", {"name": "grounded", "mode": "json_values",
                                                                 "source_key": "source", "weight": 0.5})),
    ),
    "text": Starter(
        about='prompts.jsonl: {"prompt": "..."} a line. Free text has no verifier: the policy\'s own confidence in '
              'its answer and a length bound; a judge model is better when you have one (commented out below). '
              'eval.jsonl (optional): the same with "answer": "<reference text>".',
        values=_common("text", 256, "normalized"),
        optional={"data": {"eval": "eval.jsonl"}},
        scorers=(("the policy's mean token log-prob of its reply (self-certainty, label-free)",
                  {"name": "self_certainty", "method": "mean_logprob"}),
                 ("a bounded length", {"name": "length", "min_length": 20, "max_length": 1500, "weight": 0.3})),
    ),
}
JUDGE = {"name": "judge_pointwise", "model": "path/to/judge-model", "rubric": "Is the answer correct, complete and "
         "concise?", "weight": 1.0}


def starter_toml(kind: str, prompts: str | None = None) -> str:
    """The commented TOML for `kind` (KINDS); `prompts` replaces the placeholder prompts file."""
    if kind not in STARTERS:
        raise ValueError(f"init-config: --kind must be one of {KINDS}, got {kind!r}")
    starter = STARTERS[kind]
    values = {section: dict(fields) for section, fields in starter.values.items()}
    if prompts is not None:
        values["data"]["prompts"] = prompts
    lines = [f"# TAO config for a {kind} task, written by `tao-engine init-config --kind {kind}`.",
             *_comment(starter.about),
             "# Every section and field, with its default: `tao-engine tune --help-config`; the scorers: `tao-engine "
             "scorers`.",
             "# Check it first: `tao-engine probe --config FILE`; then `tao-engine tune --config FILE`."]
    for section, cls in SECTIONS.items():
        if section == "scoring":
            lines += _scorers(starter, kind)
        chosen, commented = values.get(section, {}), starter.optional.get(section, {})
        if not chosen and not commented:
            continue
        meanings = {doc.name: doc.meaning for doc in field_docs(cls)}
        lines += ["", f"[{section}]", *_comment(PURPOSES[section])]
        for name, value in {**chosen, **commented}.items():
            lines += _comment(meanings[name], "  ")
            prefix = "# " if name in commented and name not in chosen else ""
            lines.append(f"{prefix}{name} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def _scorers(starter: Starter, kind: str) -> list[str]:
    lines = ["", "# The label-free reward: each [[scoring.scorers]] table is one scorer (see `tao-engine scorers`)."]
    for why, table in starter.scorers:
        lines += ["[[scoring.scorers]]", *_comment(why, "  ")]
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    if kind == "text":
        lines += ["# [[scoring.scorers]]  # an LLM judge: a second model rates each reply on the rubric"]
        lines += [f"# {key} = {toml_value(value)}" for key, value in JUDGE.items()]
    return lines


def _comment(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, 116, initial_indent=f"#{indent} ", subsequent_indent=f"#{indent} ") if text else []


def toml_value(value: Any) -> str:
    """A TOML literal for the values a starter holds (strings, numbers, booleans, lists, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"starter_toml: cannot write {type(value).__name__} {value!r} as TOML")


def write_starter(kind: str, output: str | Path, prompts: str | None = None, force: bool = False) -> Path:
    """Write `starter_toml(kind, prompts)` to `output`; an existing file is refused unless `force`."""
    from tao_engine.output_paths import check_output_file

    path = check_output_file(output, "--output")
    if path.exists() and not force:
        raise ValueError(f"--output {path} exists; choose another path, or add --force to replace it")
    text = starter_toml(kind, prompts)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
