"""Time limits on scorers are enforced for sync scorers too (issue 24 item 1): a sync scorer with `timeout_s` runs in
a worker process that is killed when a call overruns; the call scores None and is counted, the next call gets a fresh
worker, and a limit that cannot be enforced (a scorer that cannot go to a worker) is refused when it is configured."""

from __future__ import annotations

import os
import time

import pytest
import torch

from tao_engine.scoring.composite import CompositeScorer, WeightedScorer
from tao_engine.scoring.registry import build_composite, build_entry
from tao_engine.scoring.scorer_process import NotRunnableInWorker
from tests.scoring.worker_scorers import CountingGroups

HANG = "tests.scoring.worker_scorers:hang_on_stuck"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child that is not yet reaped is a zombie: dead for our purpose.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_a_sync_scorer_that_never_returns_times_out_and_scores_none():
    specs = [{"name": HANG, "timeout_s": 1.0}, {"name": "length", "label": "len", "max_length": 100}]
    comp = build_composite(specs, on_error="raise")
    try:
        assert comp.score_groups(["p"], [["fine", "ok"]]).per_scorer["hang_on_stuck"] == [[1.0, 1.0]]
        pid = comp._runners["hang_on_stuck"].process._proc.pid
        start = time.monotonic()
        report = comp.score_groups(["p", "q"], [["a", "stuck"], ["b"]])  # before the fix: blocked for an hour
        elapsed = time.monotonic() - start
        assert elapsed < 30, elapsed
        assert report.per_scorer["hang_on_stuck"] == [[None, None], [None]]
        assert report.metrics["hang_on_stuck/timeouts"] == 1.0 and report.metrics["hang_on_stuck/errors"] == 0.0
        assert report.per_scorer["len"] != [[None, None], [None]]  # the other scorers of the step still count
        assert not _alive(pid)  # the stuck call's worker was killed, not left running
        again = comp.score_groups(["p"], [["fine"]])  # a fresh worker serves the next call
        assert again.per_scorer["hang_on_stuck"] == [[1.0]] and again.metrics["hang_on_stuck/timeouts"] == 0.0
    finally:
        comp.close()


def test_the_time_limit_is_no_longer_ignored_for_a_sync_scorer_from_toml():
    entry = build_entry({"name": "tests.scoring.worker_scorers:worker_pid", "timeout_s": 5})
    comp = CompositeScorer([entry])
    try:
        pid = comp.score_groups(["p"], [["a"]]).scores[0][0]
        assert pid != float(os.getpid())  # the call ran in a worker, where it can be stopped
    finally:
        comp.close()
    plain = CompositeScorer([build_entry({"name": "tests.scoring.worker_scorers:worker_pid"})])
    assert plain.score_groups(["p"], [["a"]]).scores[0][0] == float(os.getpid())  # no limit: in process, no pickling


def test_a_worker_keeps_its_scorer_state_and_reports_its_metrics():
    comp = CompositeScorer([WeightedScorer(CountingGroups(), timeout_s=10)])
    try:
        comp.score_groups(["p"], [["ab"]])
        report = comp.score_groups(["p"], [["abc"]])
        assert report.scores == [[3.0]] and report.metrics["counting/calls"] == 2.0
    finally:
        comp.close()


class _HoldsModel:
    name = "holds_model"

    def __init__(self) -> None:
        self.model = torch.nn.Linear(2, 2)

    def score(self, prompts, completions, **context):
        return [0.0] * len(completions)


class _Unpicklable:
    name = "unpicklable"

    def __init__(self) -> None:
        self.fn = lambda x: x

    def score(self, prompts, completions, **context):
        return [0.0] * len(completions)


@pytest.mark.parametrize("scorer, why", [(_HoldsModel(), "holds a Linear"), (_Unpicklable(), "cannot be pickled")])
def test_a_limit_that_cannot_be_enforced_is_refused_when_configured(scorer, why):
    with pytest.raises(NotRunnableInWorker, match=why) as info:
        WeightedScorer(scorer, timeout_s=2)
    assert scorer.name in str(info.value) and "timeout_s" in str(info.value)
    WeightedScorer(scorer)  # without a limit the scorer runs in process as before


@pytest.mark.parametrize("bad", [0, -1, float("inf"), True, "5"])
def test_timeout_s_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match="timeout_s"):
        WeightedScorer(CountingGroups(), timeout_s=bad)


@pytest.mark.slow
def test_tune_with_a_never_returning_sync_scorer_finishes(tmp_path):
    """The issue's case end to end: `tune` with `timeout_s` on a sync scorer that hangs; before, it hung forever."""
    import json

    from tao_engine.cli import main
    from tests.run_fixtures import tiny_model_dir, to_toml, tune_table, write_jsonl

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "please hang"}, {"prompt": "hi"}])
    table = tune_table(tiny_model_dir(tmp_path / "model"), prompts, tmp_path / "run", steps=2,
                       scorer="tests.scoring.worker_scorers:hang_on_prompt", timeout_s=2)
    table["data"]["prompts_per_step"] = 1
    table["data"]["shuffle"] = False  # step 1 takes "please hang", step 2 "hi"
    start = time.monotonic()
    assert main(["tune", "--config", str(to_toml(table, tmp_path / "tao.toml")), "--quiet"]) == 0
    assert time.monotonic() - start < 120
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [s["score/hang_on_prompt/timeouts"] for s in steps] == [1.0, 0.0]
    assert steps[0]["score/hang_on_prompt/none_frac"] == 1.0 and steps[1]["score/hang_on_prompt/mean"] == 0.5
