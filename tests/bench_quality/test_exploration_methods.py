"""The exploration methods of the quality benchmark (issue 11's row): their [exploration] sections, and that each
task's transform turns a reasoning output into exactly the direct answer that the task's format rule and its
evaluation accept."""

from __future__ import annotations

import re

import pytest

from bench.quality.exploration import EXPLORATION_METHODS, exploration_config
from bench.quality.profiles import FULL, SMOKE
from bench.quality.tasks import get_task
from tao_engine.rl.exploration.templates import render
from tao_engine.rl.exploration.transforms import apply_transform

REASONED = {
    "sql": ("The question needs the products table, its price column and a filter on name.\n```sql\nSELECT name FROM "
            "products\n```\nOn second thought:\n```sql\nSELECT price FROM products WHERE name = 'Sunscreen'\n```\n"
            "This returns the price."),
    "math": "3 * 12 = 36\nAnswer: 36\n36 - 5 = 31\nAnswer: 31\nI hope this helps.",
}
DIRECT = {"sql": "```sql\nSELECT price FROM products WHERE name = 'Sunscreen'\n```", "math": "Answer: 31"}


@pytest.mark.parametrize("task", ["sql", "math"])
def test_the_transform_keeps_the_last_direct_answer_in_the_inference_format(task: str):
    config = exploration_config(task, "tao_reason", FULL, FULL.rules_n)
    response = apply_transform(REASONED[task], config.transform)
    assert response == DIRECT[task]
    format_rule = get_task(task).rule_scorers[-1]
    assert format_rule["label"] == "format" and re.search(format_rule["pattern"], response)
    assert apply_transform("no answer in here", config.transform) is None  # a failed candidate: reward None


@pytest.mark.parametrize("task", ["sql", "math"])
def test_the_reason_template_wraps_only_the_last_user_turn(task: str):
    config = exploration_config(task, "tao_reason", FULL, 8)
    chat = [{"role": "system", "content": "sys"}, {"role": "user", "content": "demo q"},
            {"role": "assistant", "content": "demo a"}, {"role": "user", "content": "the question"}]
    asked = render(chat, config.reason_template, "reason")
    assert asked[:3] == chat[:3]  # the demonstration turn stays as the inference-time prompt has it
    assert asked[3]["content"].startswith("the question\n\n") and len(asked[3]["content"]) > 40


@pytest.mark.parametrize("profile", [FULL, SMOKE])
@pytest.mark.parametrize("n", [2, 7, 8])
def test_mixed_splits_the_candidates_and_caps_the_tokens(profile, n: int):
    for task in ("sql", "math"):
        config = exploration_config(task, "tao_mixed", profile, n)
        assert config.strategy == "mixed" and config.candidates_per_prompt(n) == n
        assert [e.strategy for e in config.mixed] == ["plain", "reason"]
        assert all(e.temperature == profile.temperature for e in config.mixed)
        uncapped = n // 2 * profile.max_tokens[task] + (n - n // 2) * profile.explore_max_tokens[task]
        assert n <= config.tokens_budget_per_prompt < uncapped
        reason = exploration_config(task, "tao_reason", profile, n)
        assert reason.strategy == "reason" and reason.max_tokens == profile.explore_max_tokens[task]


def test_only_exploration_methods_get_a_section():
    assert set(EXPLORATION_METHODS) == {"tao_reason", "tao_mixed"}
    with pytest.raises(ValueError, match="not an exploration method"):
        exploration_config("sql", "tao", FULL, 8)
