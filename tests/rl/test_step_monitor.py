"""Progress inside a step and an honest step_s (issue 23 item 3), peak memory per phase (item 8): the bar says what
runs (generating k/N samples, scoring, updating micro-batch k/M), `step_s` covers the whole step with each phase's
seconds and peak memory beside it."""

from __future__ import annotations

import json
import mmap
import time

import pytest

from tao_engine.cli import main
from tao_engine.rl.step_monitor import PeakMemory, StepMonitor
from tests.run_fixtures import tiny_model_dir, to_toml, tune_table, write_jsonl


@pytest.mark.skipif(not PeakMemory().resettable, reason="needs a resettable peak resident set (Linux /proc)")
def test_each_phase_reports_its_own_peak_and_time():
    monitor = StepMonitor(1, 0, show=False)
    monitor.start_step()
    with monitor.phase("generate"):
        # 64 MiB of fresh anonymous pages, touched, then unmapped before the next phase (an allocator could serve a
        # tensor from memory a long test session already holds resident, and the peak would not move)
        big = mmap.mmap(-1, 64 * 2**20)
        big.write(b"\x01" * len(big))
        big.close()
    with monitor.phase("update"):
        time.sleep(0.05)
    out = monitor.step_metrics()
    assert out["generate_peak_mb"] - out["update_peak_mb"] > 48  # the next phase does not inherit the peak
    assert out["peak_memory_mb"] == out["generate_peak_mb"]
    assert out["train_s"] >= 0.05 and out["step_s"] >= out["train_s"] + out["generate_s"]


def test_tune_shows_what_runs_inside_a_step_and_times_the_whole_step(tmp_path, capsys):
    model_dir = tiny_model_dir(tmp_path / "m")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Question {i}?"} for i in range(4)])
    table = tune_table(model_dir, prompts, tmp_path / "run", steps=2)
    table["train"]["max_tokens_per_forward"] = 16  # several micro-batches
    table["probe"] = {"before_tune": False}
    assert main(["tune", "--config", str(to_toml(table, tmp_path / "tao.toml"))]) == 0
    err = capsys.readouterr().err
    assert "generating" in err and "/6 samples" in err and "scoring" in err and "updating micro-batch 1/" in err
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for record in steps:
        phases = record["generate_s"] + record["score_s"] + record["train_s"]
        assert record["step_s"] >= phases > 0  # the whole step, not only its update
        assert all(record[f"{p}_peak_mb"] > 0 for p in ("generate", "score", "update"))
