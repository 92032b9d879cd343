"""The guards inside the TAO loop on a tiny model: the format warm-up trains best-of-N SFT first, the held-out
label-free score is logged and picks the best checkpoint (kept from pruning, and final/ holds its weights), a
collapse stops the run, a resumed guarded run equals the uninterrupted one, and the readiness probe that tune runs
first changes nothing about the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tao_engine.rl.tao import TAO
from tao_engine.rl.tao_config import TAOConfig
from tests.run_fixtures import tiny_model_dir, tune_table, write_jsonl

PROMPTS = [{"prompt": p} for p in ("What is 2+2?", "Name a colour.", "Hi", "Say yes.", "Count to three.",
                                   "Spell cat.", "Add 1 and 1.", "Pick a fruit.")]
GUARDS = {"warmup_steps": 1, "holdout_prompts": 2, "holdout_n": 2, "keep_best": True, "min_majority_share": 0.0}
TIMING = ("_s", "tok/s", "seconds", "_mb")  # times and peak memory differ between processes


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def _config(model_dir: Path, root: Path, steps: int = 4, **sections) -> TAOConfig:
    prompts = root / "prompts.jsonl"
    if not prompts.exists():
        write_jsonl(prompts, PROMPTS)
    table = tune_table(model_dir, prompts, root / "run", steps=steps)
    table["run"]["keep_last"] = 1
    table["probe"] = {"before_tune": False}
    for name, values in sections.items():
        table.setdefault(name, {}).update(values)
    return TAOConfig.from_dict(table)


def _metrics(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if not k.endswith(TIMING)} for line in lines]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_warmup_holdout_and_best_checkpoint(model_dir, tmp_path):
    result = TAO(_config(model_dir, tmp_path, guards=GUARDS), progress=False).run()
    steps = _metrics(tmp_path / "run")
    assert [s["guard/warmup"] for s in steps] == [1.0, 0.0, 0.0, 0.0]
    assert "guard/warmup_pass_frac" in steps[0] and "guard/majority_share" in steps[1]
    scores = [s["guard/holdout_score"] for s in steps]
    assert all(isinstance(v, float) for v in scores)
    best = max(range(4), key=lambda i: (scores[i], -i)) + 1
    assert result.best_step == best and steps[-1]["guard/holdout_best_step"] == best
    kept = sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*"))
    assert f"checkpoint-{best}" in kept and "checkpoint-4" in kept  # the best survives keep_last = 1
    final, chosen = _weights(tmp_path / "run" / "final"), _weights(tmp_path / "run" / f"checkpoint-{best}" / "model")
    assert final.keys() == chosen.keys() and all(torch.equal(final[k], chosen[k]) for k in final)
    assert len(result.used_prompts) <= 6  # two prompts were held out of training


def test_a_resumed_guarded_run_equals_the_uninterrupted_one(model_dir, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for root in (whole, parts):
        root.mkdir()
    TAO(_config(model_dir, whole, guards=GUARDS), progress=False).run()
    TAO(_config(model_dir, parts, steps=2, guards=GUARDS), progress=False).run()
    TAO(_config(model_dir, parts, steps=4, guards=GUARDS), progress=False).run(resume=True)
    assert _metrics(whole / "run") == _metrics(parts / "run")
    a, b = _weights(whole / "run" / "final"), _weights(parts / "run" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_collapse_stops_the_run_and_says_why(model_dir, tmp_path, capsys):
    config = _config(model_dir, tmp_path, guards={"collapse_share": 0.5, "collapse_min_prompts": 2,
                                                   "collapse_action": "stop"})
    config = TAOConfig.from_dict({**config.to_dict(), "scoring": {"scorers": [
        {"name": "tests.step_scorers:SameAnswerVote"}]}})
    result = TAO(config, progress=False).run()
    assert result.steps == 1 and "cross-prompt collapse" in result.stopped
    assert "stopping after step 1: cross-prompt collapse" in capsys.readouterr().err
    assert (tmp_path / "run" / "final").is_dir() and (tmp_path / "run" / "checkpoint-1").is_dir()
    assert _metrics(tmp_path / "run")[0]["guard/collapse"] == 1.0


def test_the_probe_before_tuning_changes_nothing_about_the_run(model_dir, tmp_path, capsys):
    plain, probed = tmp_path / "plain", tmp_path / "probed"
    for root in (plain, probed):
        root.mkdir()
    TAO(_config(model_dir, plain, steps=2), progress=False).run()
    result = TAO(_config(model_dir, probed, steps=2, probe={"before_tune": True, "prompts": 3}), progress=False).run()
    assert result.probe is not None and result.probe.unlabeled["prompts"] == 3
    assert "readiness probe: 3 prompts x 3 samples" in capsys.readouterr().err
    report = json.loads((probed / "run" / "probe.json").read_text())
    assert report["verdict"] in ("go", "weak", "no-go") and report["unlabeled"]["n"] == 3
    assert _metrics(plain / "run") == _metrics(probed / "run")
