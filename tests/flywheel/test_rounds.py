"""round_from_table on a table filled through the table API: a round marks exactly the rows of the prompts it
trained on (duplicates by content included), the next round takes only new prompts and starts from the previous
round's model, a failed round marks nothing and leaves no round behind, and `tune --from-table` runs a round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tao_engine.cli import main
from tao_engine.flywheel import NotEnoughPromptsError, read_rounds, round_from_table
from tao_engine.serve import InferenceRecord, InferenceTable
from tests.flywheel.conftest import tao_table, write_toml
from tests.flywheel.flywheel_scorers import TargetTokenScorer, composite


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _insert(table_path: Path, prompts: list[tuple[str, object]]) -> list[int]:
    """Log one row per (kind, prompt) as the server would; returns the row ids."""
    with InferenceTable(table_path) as table:
        version = table.model_versions()[-1][0] if table.model_versions() else table.register_model_version("m")
        start = table.count()
        records = [
            InferenceRecord(request_id=f"req-{start + i}", created_at=0.0, model_version=version, kind=kind,
                            prompt=prompt, sampling={"temperature": 1.0}, outputs=["x"], finish_reasons=["stop"],
                            prompt_tokens=3, completion_tokens=1, latency_s=0.01)
            for i, (kind, prompt) in enumerate(prompts)
        ]
        return table.insert_many(records)


def _used_in_round(table_path: Path) -> dict[int, str | None]:
    with InferenceTable(table_path) as table:
        return {row.id: row.used_in_round for row in table.rows()}


def test_rounds_mark_exactly_their_rows_and_take_only_new_prompts(tao_config, tmp_path):
    table_path = tmp_path / "infer.sqlite"
    first = _insert(table_path, [
        ("chat", _chat("What is 2+2?")),
        ("chat", _chat("What is 2+2?  \r\n")),  # the same content (trailing space, CRLF): one prompt
        ("completion", "Once upon a time"),
        ("completion", [5, 9, 11]),
    ])
    scorer = TargetTokenScorer()
    record = round_from_table(table_path, tao_config, scorer=composite(scorer))

    assert record.round_id == "round-1" and record.index == 1
    assert record.num_prompts == 3 and record.rows_used == first
    assert record.steps == 2 and record.reward_first is not None and record.reward_last is not None
    assert Path(record.model_dir) == (tmp_path / "flywheel" / "round-1" / "final").resolve()
    assert (Path(record.model_dir) / "config.json").is_file()
    assert _used_in_round(table_path) == {i: "round-1" for i in first}
    assert [r.round_id for r in read_rounds(tmp_path / "flywheel")] == ["round-1"]

    second = _insert(table_path, [
        ("chat", _chat("Name a prime number.")),
        ("chat", _chat("What is 2+2?")),  # already trained on in round 1: never offered again
        ("completion", "The sea is"),
        ("completion", "The sea is "),  # a duplicate inside the new batch
    ])
    scorer = TargetTokenScorer()
    record2 = round_from_table(table_path, tao_config, scorer=composite(scorer))

    assert record2.round_id == "round-2" and record2.num_prompts == 2
    assert record2.rows_used == [second[0], second[2], second[3]]
    assert record2.base_model == record.model_dir  # round 2 continues from round 1's model
    used = _used_in_round(table_path)
    assert used[second[1]] is None and all(used[i] == "round-1" for i in first)
    assert scorer.prompts_seen and all("prime" in p or "The sea is" in p for p in scorer.prompts_seen)
    manifest = json.loads((tmp_path / "flywheel" / "rounds.json").read_text())
    assert [r["round_id"] for r in manifest["rounds"]] == ["round-1", "round-2"]
    assert manifest["rounds"][1]["rows_used"] == record2.rows_used

    with pytest.raises(NotEnoughPromptsError, match="0 unused prompt"):
        round_from_table(table_path, tao_config, scorer=composite(TargetTokenScorer()))


def test_a_failed_round_marks_nothing_and_the_retry_takes_its_prompts(tao_config, tmp_path):
    table_path = tmp_path / "infer.sqlite"
    ids = _insert(table_path, [("chat", _chat("first")), ("chat", _chat("second"))])
    with pytest.raises(RuntimeError, match="on purpose"):
        round_from_table(table_path, tao_config, scorer=composite(TargetTokenScorer(fail=True)))

    assert _used_in_round(table_path) == {i: None for i in ids}
    root = tmp_path / "flywheel"
    assert not (root / "round-1").exists() and not (root / "rounds.json").exists()
    assert [p.name for p in root.iterdir()] == []  # no half-written round directory either

    record = round_from_table(table_path, tao_config, scorer=composite(TargetTokenScorer()))
    assert record.round_id == "round-1" and record.rows_used == ids


def test_min_prompts_and_bad_arguments(tao_config, tmp_path):
    table_path = tmp_path / "infer.sqlite"
    _insert(table_path, [("chat", _chat("only one"))])
    with pytest.raises(NotEnoughPromptsError, match="at least 2"):
        round_from_table(table_path, tao_config, min_prompts=2, scorer=composite(TargetTokenScorer()))
    with pytest.raises(ValueError, match="round_id"):
        round_from_table(table_path, tao_config, round_id="../escape", scorer=composite(TargetTokenScorer()))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        round_from_table(tmp_path / "missing.sqlite", tao_config)
    assert _used_in_round(table_path) == {1: None}


def test_tune_from_table_command(model_dir, tmp_path, capsys):
    table_path = tmp_path / "infer.sqlite"
    ids = _insert(table_path, [("chat", _chat("alpha")), ("chat", _chat("beta")), ("completion", "gamma")])
    toml = write_toml(tao_table(model_dir, tmp_path / "out", steps=1), tmp_path / "tao.toml")

    code = main(["tune", "--config", str(toml), "--from-table", str(table_path), "--quiet", "--run.seed", "4"])

    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    # One step of 2 prompts trains on 2 of the 3: only those are marked (all 3 were, before issue 24).
    trained = summary["rows_used"]
    assert summary["round_id"] == "round-1" and len(trained) == 2 and set(trained) < set(ids)
    assert summary["num_prompts"] == 2 and summary["steps"] == 1
    assert (Path(summary["model_dir"]) / "config.json").is_file()
    (left,) = set(ids) - set(trained)
    assert _used_in_round(table_path) == {i: None if i == left else "round-1" for i in ids}
    assert main(["tune", "--config", str(toml), "--from-table", str(table_path), "--quiet"]) == 0  # the one left
    assert json.loads(capsys.readouterr().out)["rows_used"] == [left]
    assert main(["tune", "--config", str(toml), "--from-table", str(table_path), "--quiet"]) == 2  # nothing left
    assert "0 unused prompt" in capsys.readouterr().err
