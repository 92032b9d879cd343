"""The quality report's targets from cell records: a task without a measurement never counts as meeting one, and
the contrast tasks' probe verdicts count without any TAO cell (the full profile runs only probe and base there)."""

from __future__ import annotations

from bench.quality.suite_stats import SuiteResults, targets


def _cell(task: str, method: str, n: int, seed: int, accuracy: float) -> dict:
    return {"task": task, "method": method, "n": n, "seed": seed, "eval": {"accuracy": accuracy}}


def _probe(task: str, verdict: str) -> dict:
    return {"task": task, "method": "probe", "n": 8, "seed": 0, "probe": {"verdict": verdict}}


def _rows(records: list[dict]) -> dict[str, tuple[bool | None, str]]:
    return {name: (met, numbers) for name, met, numbers in targets(SuiteResults(records), 8, (2, 8))}


def test_an_unmeasured_sft_row_is_not_a_match():
    records = [_cell("extract", "base", 1, 0, 0.1)] + [_cell("extract", "tao", 8, s, 0.7 + s / 100) for s in range(3)]
    met, numbers = _rows(records)["TAO matches SFT (within 2 sd) or beats it on at least two tasks"]
    assert met is False and numbers == "none"


def test_contrast_verdicts_count_without_tao_cells():
    records = [_cell("sql", "base", 1, 0, 0.0), _probe("sql", "go"), _cell("math", "base", 1, 0, 0.05),
               _probe("math", "no-go")]
    met, _ = _rows(records)["The probe's verdict matches the outcome"]
    assert met is False  # "go" on a below-competence task is wrong even before any tuning
    records[1] = _probe("sql", "weak")
    assert _rows(records)["The probe's verdict matches the outcome"][0] is True


def test_a_go_verdict_agrees_only_with_a_gain_beyond_two_sd():
    base = _cell("extract", "base", 1, 0, 0.10)
    gained = [_cell("extract", "tao", 8, s, 0.70 + s / 100) for s in range(3)]
    flat = [_cell("extract", "tao", 8, s, 0.10 + s / 10) for s in range(3)]  # mean 0.2, sd 0.1: within 2 sd
    assert _rows([base, _probe("extract", "go"), *gained])["The probe's verdict matches the outcome"][0] is True
    assert _rows([base, _probe("extract", "go"), *flat])["The probe's verdict matches the outcome"][0] is False
    assert _rows([base, _probe("extract", "weak"), *flat])["The probe's verdict matches the outcome"][0] is True
