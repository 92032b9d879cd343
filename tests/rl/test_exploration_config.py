"""The [exploration] section, [tasks.<name>] tables and prompt `task` fields: valid configs round-trip, bad ones name
the field (or the task and the file line)."""

from __future__ import annotations

import json

import pytest

from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.rl.exploration.config import ExplorationConfig, MixedEntry, TransformConfig
from tao_engine.rl.exploration.routing import TaskRouting
from tao_engine.rl.exploration.tasks import check_record_tasks
from tao_engine.rl.prompt_data import load_prompts
from tao_engine.rl.tao_config import ScoringSection, TAOConfig


def test_exploration_and_tasks_from_toml_round_trip(tmp_path):
    path = tmp_path / "tao.toml"
    path.write_text(
        """
[sampling]
n = 4
[exploration]
strategy = "mixed"
transform = "final_number"
max_tokens = 64
tokens_budget_per_prompt = 300
[[exploration.mixed]]
strategy = "reason"
temperature = 0.7
n = 3
[[exploration.mixed]]
strategy = "plain"
n = 1
[tasks.math]
[[tasks.math.scorers]]
name = "majority_vote"
[tasks.sql]
combine = "normalize_then_sum"
[tasks.sql.exploration]
strategy = "reason"
reason_template = "Write SQL for: {prompt}"
transform = {kind = "final_sql"}
[[tasks.sql.scorers]]
name = "length"
max_length = 300
"""
    )
    cfg = TAOConfig.from_toml(path, ["exploration.refine_rounds=2"])
    assert cfg.exploration.strategy == "mixed" and cfg.exploration.refine_rounds == 2
    assert cfg.exploration.transform == TransformConfig(kind="final_number")
    assert cfg.exploration.mixed == (MixedEntry("reason", 0.7, 3), MixedEntry("plain", 1.0, 1))
    assert cfg.exploration.candidates_per_prompt(cfg.sampling.n) == 4
    sql = cfg.exploration.with_overrides(cfg.tasks["sql"].exploration)
    assert sql.strategy == "reason" and sql.transform.kind == "final_sql" and sql.mixed == ()
    assert sql.tokens_budget_per_prompt is None and sql.max_tokens == 64  # the run's other keys carry over
    assert cfg.tasks["sql"].combine == "normalize_then_sum" and cfg.tasks["math"].scorers[0]["name"] == "majority_vote"
    assert TAOConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"exploration": {"strategy": "beam"}}, r"\[exploration\].*strategy must be one of"),
        ({"exploration": {"stratgy": "reason"}}, r"\[exploration\].*unknown key.*stratgy"),
        ({"exploration": {"transform": "last_word"}}, "transform kind must be one of"),
        ({"exploration": {"transform": {"kind": "regex"}}}, "needs pattern"),
        ({"exploration": {"transform": {"kind": "regex", "pattern": "(unclosed"}}}, "not a regex"),
        ({"exploration": {"transform": {"kind": "after_marker", "marker": ""}}}, "non-empty marker"),
        ({"exploration": {"transform": {"kind": "identity", "pattern": "x"}}}, "only used by kind 'regex'"),
        ({"exploration": {"transform": {"kind": "identity", "color": 1}}}, r"transform.*unknown key"),
        ({"exploration": {"reason_template": "Think hard."}}, r"neither a built-in.*\{prompt\}"),
        ({"exploration": {"revise_template": "{prompt} {draft}"}}, r"revise_template.*\{critique\}"),
        ({"exploration": {"refine_rounds": 0}}, "refine_rounds must be an integer >= 1"),
        ({"exploration": {"strategy": "mixed"}}, "needs \\[\\[exploration.mixed\\]\\]"),
        ({"exploration": {"mixed": [{"strategy": "plain"}]}}, "only used by strategy 'mixed'"),
        ({"exploration": {"strategy": "mixed", "mixed": [{"strategy": "mixed"}]}}, "mixed entry strategy"),
        ({"exploration": {"strategy": "mixed", "mixed": [{"strategy": "plain", "n": 0}]}}, "n must be an integer"),
        ({"exploration": {"strategy": "mixed", "mixed": [{"strategy": "plain", "temp": 1}]}}, r"mixed\[0\].*unknown"),
        ({"exploration": {"tokens_budget_per_prompt": 100}}, "caps strategy 'mixed' only"),
        ({"exploration": {"max_tokens": 0}}, "max_tokens must be an integer >= 1"),
        ({"tasks": {"sql": {"scorer": []}}}, r"\[tasks.sql\].*unknown key"),
        ({"tasks": {"sql": {"exploration": {"strategy": "beam"}}}}, r"\[tasks.sql\].*strategy must be one of"),
        ({"tasks": {"sql": {"combine": "max"}}}, r"\[tasks.sql\].*combine must be one of"),
        ({"tasks": {"sql": "reason"}}, r"\[tasks.sql\]: must be a table"),
    ],
)
def test_bad_exploration_and_task_config_names_the_field(table, match):
    with pytest.raises(ValueError, match=match):
        TAOConfig.from_dict(table)


def test_tasks_must_agree_on_the_number_of_candidates_per_prompt():
    mixed = ExplorationConfig(strategy="mixed", mixed=(MixedEntry("reason", n=3),))
    with pytest.raises(ValueError, match="same number of candidates"):
        TaskRouting({"a": mixed, "b": ExplorationConfig()}, {"a": None, "b": None}, SamplingParams(n=4))
    TaskRouting({"a": mixed, "b": ExplorationConfig()}, {"a": None, "b": None}, SamplingParams(n=3))  # agrees


def test_a_task_without_scorers_needs_the_run_scorers():
    cfg = TAOConfig.from_dict({"tasks": {"sql": {}}})
    with pytest.raises(ValueError, match=r"\[tasks.sql\]: no scorers"):
        TaskRouting.from_config(cfg.exploration, cfg.tasks, ScoringSection(), cfg.sampling, run_scorer=None)


def test_prompt_tasks_are_read_and_unconfigured_ones_name_the_task_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"prompt": "2+2?", "task": "math", "answer": "4"}) + "\n"
        + json.dumps({"prompt": "List users", "task": "sql"}) + "\n"
        + json.dumps({"prompt": "Hi"}) + "\n"
    )
    records = load_prompts(path, system_prompt="Be brief.")
    assert [r.task for r in records] == ["math", "sql", None]
    assert records[0].context == {"answer": "4"} and records[0].prompt[0]["role"] == "system"  # task is no context
    assert records[1].source == f"{path}:2"
    with pytest.raises(ValueError, match=r"p.jsonl:2: task 'sql' is not configured.*\[tasks.sql\]"):
        check_record_tasks(records[:2], {"math": True})
    with pytest.raises(ValueError, match=r"p.jsonl:3: the prompt has no 'task'"):
        check_record_tasks(records, {"math": True, "sql": True})
    with pytest.raises(ValueError, match=r"p.jsonl:1: task 'math' .*no \[tasks\] tables"):
        check_record_tasks(records, {})
    check_record_tasks(records[2:], {})  # no tasks anywhere: fine
    path.write_text(json.dumps({"prompt": "x", "task": 3}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:1: 'task' must be a non-empty string"):
        load_prompts(path)


def test_strategies_are_selectable_from_flags():
    from tao_engine.rl.tao_config import apply_overrides, split_overrides

    flags = ["--exploration.strategy", "mixed", "--exploration.mixed", '[{strategy = "reason", n = 3}, '
             '{strategy = "plain", temperature = 0.5, n = 1}]', "--exploration.tokens_budget_per_prompt=512",
             "--exploration.transform", "final_number"]
    cfg = TAOConfig.from_dict(apply_overrides({}, split_overrides(flags)))
    assert cfg.exploration.mixed == (MixedEntry("reason", 1.0, 3), MixedEntry("plain", 0.5, 1))
    assert cfg.exploration.tokens_budget_per_prompt == 512 and cfg.exploration.transform.kind == "final_number"
    assert TAOConfig().exploration.strategy == "plain"  # the default run explores as it always did
