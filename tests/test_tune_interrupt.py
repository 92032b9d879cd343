"""Stopping a tune early (issue 23 item 6): SIGTERM or Ctrl-C finishes the step, writes a checkpoint and says how to
resume and export (exit 130); a second signal abandons the step and keeps the state from before it; `tao-engine
export RUN_DIR --step K` writes the merged model of any checkpoint, the same files a finished run's final/ holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tao_engine.cli import main
from tao_engine.rl.checkpoint import list_checkpoints
from tests.run_fixtures import tiny_model_dir, to_toml, tune_table, write_jsonl


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def _argv(tmp_path: Path, model_dir: Path, steps: int, lora: bool = True, **scorer: object) -> list[str]:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Question {i}?"} for i in range(6)])
    table = tune_table(model_dir, prompts, tmp_path / "run", steps=steps, **scorer)
    table["run"]["checkpoint_every"] = 0  # only the interruption writes one mid-run
    table["probe"] = {"before_tune": False}
    if lora:
        table["lora"] = {"r": 4, "alpha": 8.0}
    return ["tune", "--config", str(to_toml(table, tmp_path / "tao.toml")), "--quiet"]


def _weights(directory: Path) -> dict:
    return {k: v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sigterm_finishes_the_step_checkpoints_and_says_how_to_resume_and_export(tmp_path, model_dir, capsys):
    argv = _argv(tmp_path, model_dir, steps=5, scorer="tests.step_scorers:SignalOnCall", call=2,
                 once=str(tmp_path / "signalled"))
    assert main(argv) == 130
    err = capsys.readouterr().err
    run = tmp_path / "run"
    assert "tao: SIGTERM: finishing this step" in err and "Traceback" not in err
    assert re.search(r"interrupted \(SIGTERM after step 2\); the run up to step 2 is saved in \S+checkpoint-2", err)
    assert f"resume:  tao-engine tune --config {tmp_path / 'tao.toml'} --resume" in err
    assert f"export:  tao-engine export {run} --step 2" in err
    assert [s for s, _ in list_checkpoints(run)] == [2] and _steps(run) == [1, 2]  # step 2 ran to its end
    assert not (run / "final").exists()
    assert main(["export", str(run), "--step", "2"]) == 0
    assert (run / "final" / "config.json").is_file() and (run / "final_adapter" / "adapter_config.json").is_file()
    assert main(["export", str(run)]) == 2 and "exists" in capsys.readouterr().err  # never replaced silently
    assert main([*argv, "--resume"]) == 0 and _steps(run) == [1, 2, 3, 4, 5]


def test_a_second_signal_abandons_the_step_and_keeps_the_state_before_it(tmp_path, model_dir, capsys):
    argv = _argv(tmp_path, model_dir, steps=5, scorer="tests.step_scorers:SignalOnCall", call=3,
                 times=2, once=str(tmp_path / "signalled"))
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted (step 3 abandoned); the run up to step 2 is saved in" in err
    run = tmp_path / "run"
    assert [s for s, _ in list_checkpoints(run)] == [2] and _steps(run) == [1, 2]
    assert main([*argv, "--resume"]) == 0 and _steps(run) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("lora", [True, False])
def test_export_of_the_last_checkpoint_equals_the_runs_own_final_model(tmp_path, model_dir, lora):
    assert main(_argv(tmp_path, model_dir, steps=2, lora=lora)) == 0
    run = tmp_path / "run"
    assert main(["export", str(run), "--step", "2", "--output", str(tmp_path / "exported")]) == 0
    final, exported = _weights(run / "final"), _weights(tmp_path / "exported")
    assert final.keys() == exported.keys() and all((final[k] == exported[k]).all() for k in final)
    assert main(["export", str(run), "--step", "7"]) == 2
