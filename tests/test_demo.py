"""`make demo` (tao_engine.demo): its prompt files stay out of the run directory, so the run may start there and a
second `make demo` replaces the first; and the demo runs end to end on the bundled SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tao_engine.demo import demo_config, run_demo
from tao_engine.rl.run_dir import prepare_new_run_dir


def test_the_demo_run_directory_holds_only_what_a_run_writes(tmp_path: Path):
    run_dir = tmp_path / "runs" / "demo"
    config = demo_config(run_dir, steps=1)
    for path in (Path(config.data.prompts), Path(config.data.eval)):
        assert path.is_file() and run_dir not in path.parents
    # A run starting in the directory (with overwrite, as run_demo asks) is not refused.
    prepare_new_run_dir(config.run.output_dir, overwrite=True)
    # The tuner never sees a label; the held-out file has them.
    assert all("answer" not in json.loads(line) for line in Path(config.data.prompts).read_text().splitlines())
    assert all("answer" in json.loads(line) for line in Path(config.data.eval).read_text().splitlines())


@pytest.mark.slow
def test_the_demo_runs_on_smollm2(tmp_path: Path, smollm2_gguf: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("TAO_CACHE_DIR", str(tmp_path / "cache"))  # the bundled model's import, not the user's cache
    run_dir = tmp_path / "demo"
    assert run_demo(run_dir, steps=1) == 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) >= 1
    assert (run_dir / "final" / "config.json").is_file()
    assert "held-out eval after: accuracy" in capsys.readouterr().out
