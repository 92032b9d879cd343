"""A tuning run never mixes two runs, never loses its steps and never dies on a damaged checkpoint (issue 24 items
3-5): one run per output directory, resume refuses a changed configuration, every checkpoint carries a manifest and
resume falls back past a damaged one loudly, prompts that cannot run are found when the data loads (file:line), and a
failure mid-run writes a checkpoint before it stops."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tao_engine.rl.checkpoint import load_checkpoint
from tao_engine.rl.checkpoint_manifest import CorruptCheckpoint
from tao_engine.rl.tao import TAO
from tao_engine.rl.tao_config import TAOConfig
from tao_engine.scoring.base import ScoringError
from tests.run_fixtures import tiny_model_dir, tune_table, write_jsonl

PROMPTS = [{"prompt": p} for p in ("What is 2+2?", "Name a colour.", "Hi", "Say yes.")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def _config(model_dir: Path, root: Path, **changes) -> TAOConfig:
    prompts = root / "prompts.jsonl"
    if not prompts.exists():
        write_jsonl(prompts, PROMPTS)
    table = tune_table(model_dir, prompts, root / "run", steps=changes.pop("steps", 2))
    for key, value in changes.items():
        section, name = key.split("__")
        table.setdefault(section, {})[name] = value
    return TAOConfig.from_dict(table)


def _run(config: TAOConfig, **kwargs):
    return TAO(config, progress=False).run(**kwargs)


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _snapshot(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_a_new_run_refuses_a_directory_holding_a_run(model_dir, tmp_path):
    _run(_config(model_dir, tmp_path))
    before = _snapshot(tmp_path / "run")
    with pytest.raises(ValueError, match=r"not empty.*--resume.*--overwrite"):
        _run(_config(model_dir, tmp_path, optim__lr=0.5))
    # Before: final/ overwritten, old checkpoints pruned, steps appended to the old metrics.
    assert _snapshot(tmp_path / "run") == before


def test_overwrite_replaces_the_previous_run_and_only_a_run(model_dir, tmp_path):
    _run(_config(model_dir, tmp_path, steps=3))
    _run(_config(model_dir, tmp_path, steps=1), overwrite=True)
    run_dir = tmp_path / "run"
    assert _steps(run_dir) == [1]
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-1"]
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        _run(_config(model_dir, tmp_path, steps=1), overwrite=True)
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_resume_refuses_a_changed_configuration_naming_the_fields(model_dir, tmp_path):
    _run(_config(model_dir, tmp_path, steps=2))
    with pytest.raises(ValueError, match=r"optim\.lr: 0\.01 -> 0\.5.*sampling\.n: 3 -> 4"):
        _run(_config(model_dir, tmp_path, steps=3, optim__lr=0.5, sampling__n=4), resume=True)
    assert _steps(tmp_path / "run") == [1, 2]  # nothing continued the old run with the new settings
    _run(_config(model_dir, tmp_path, steps=3), resume=True)  # run.steps may grow
    assert _steps(tmp_path / "run") == [1, 2, 3]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "optimizer.pt": _truncate,
    "rng_state.pt": _truncate,
    "data_cursor.json": lambda p: p.write_text(""),
    "checkpoint.json": lambda p: p.unlink(),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_a_damaged_checkpoint_is_named_and_resume_falls_back_loudly(model_dir, tmp_path, capsys, name):
    config = _config(model_dir, tmp_path, steps=2)
    tao = TAO(config, progress=False)
    tao.run()
    newest = tmp_path / "run" / "checkpoint-2"
    CORRUPTIONS[name](newest / name)
    with pytest.raises(CorruptCheckpoint, match=name) as info:
        load_checkpoint(newest, tao.model, tao.optimizer, tao.lr_scheduler, generators={"engine": tao.engine.generator})
    assert info.value.file == newest / name
    capsys.readouterr()

    _run(_config(model_dir, tmp_path, steps=3), resume=True)
    err = capsys.readouterr().err
    assert f"checkpoint-2 cannot be resumed: {newest / name}" in err  # said loudly, naming the file
    assert "resuming from checkpoint-1 (step 1)" in err
    assert _steps(tmp_path / "run") == [1, 2, 3]  # step 2 redone after checkpoint-1, the log cut back to match


def test_resume_with_no_intact_checkpoint_names_each_damaged_one(model_dir, tmp_path):
    _run(_config(model_dir, tmp_path, steps=2))
    for step in (1, 2):
        _truncate(tmp_path / "run" / f"checkpoint-{step}" / "optimizer.pt")
    with pytest.raises(ValueError, match=r"no intact checkpoint.*checkpoint-2/optimizer\.pt.*checkpoint-1/optim"):
        _run(_config(model_dir, tmp_path, steps=3), resume=True)


def test_an_over_long_prompt_is_an_error_naming_file_and_line_before_any_step(model_dir, tmp_path):
    long = {"prompt": "word " * 400}  # far past the tiny model's 256-token context
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [*PROMPTS[:2], long, *PROMPTS[2:]])
    with pytest.raises(ValueError, match=rf"{prompts}:3: this prompt cannot run: \d+ prompt tokens \+ max_tokens 4"):
        _run(_config(model_dir, tmp_path, steps=3))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # refused before any work

    result = _run(_config(model_dir, tmp_path, steps=3, data__skip_failed=True))
    assert len(result.skipped_prompts) == 1 and result.skipped_prompts[0].startswith(f"{prompts}:3: ")
    assert _steps(tmp_path / "run") == [1, 2, 3]


def test_a_failure_mid_run_writes_a_checkpoint_before_it_stops(model_dir, tmp_path, capsys):
    # No readiness probe: it would be the scorer's first call, and this test counts calls to fail the third.
    config = _config(model_dir, tmp_path, steps=4, run__checkpoint_every=0, probe__before_tune=False)
    config = TAOConfig.from_dict({**config.to_dict(), "scoring": {
        "scorers": [{"name": "tests.step_scorers:FailOnCall", "call": 3}], "on_error": "raise"}})
    with pytest.raises(ScoringError, match="failed on call"):
        _run(config)
    # Before: no checkpoint (checkpoint_every = 0), steps 1-2 lost.
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2"]
    assert "step 3 failed; steps 1-2 are saved in" in capsys.readouterr().err
    _run(config, resume=True)  # a fresh scorer counts its calls from 1: the run goes through
    assert _steps(tmp_path / "run") == [1, 2, 3, 4]


def test_skip_failed_is_set_from_toml_and_the_command_line(tmp_path):
    from tao_engine.rl.tao_config import load_tao_config

    assert load_tao_config(None, ["--data.skip_failed", "true"]).data.skip_failed is True
    toml = tmp_path / "tao.toml"
    toml.write_text("[data]\nskip_failed = true\n")
    assert load_tao_config(str(toml), []).data.skip_failed is True
    with pytest.raises(ValueError, match="skip_failed must be true or false"):
        load_tao_config(None, ["--data.skip_failed", "sometimes"])
