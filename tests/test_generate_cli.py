"""`tao-engine generate` serves every prompt it can and says which it could not (issue 24 items 6-7): a line with
token ids outside the vocabulary, or prompt + max_tokens past what the engine holds, gets its error on its own
output line while the others are served, the command exits 1 with a count; an output path that cannot be written is
refused before the model loads and leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tao_engine.cli import main
from tests.run_fixtures import MAX_CONTEXT, tiny_model_dir, write_jsonl


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def _generate(model_dir: Path, tmp_path: Path, records: list[dict], *extra: str) -> tuple[int, list[dict]]:
    prompts = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    code = main(["generate", "--model", str(model_dir), "--input", str(prompts), "--output", str(out), "--quiet",
                 "--max-tokens", "4", *extra])
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return code, lines


def test_out_of_vocabulary_ids_fail_their_line_and_the_others_are_served(model_dir, tmp_path, capsys):
    records = [{"id": "a", "prompt": "Hello"}, {"id": "bad", "prompt_token_ids": [5, 10**6, -3]},
               {"id": "c", "prompt_token_ids": [5, 6, 7]}]
    code, lines = _generate(model_dir, tmp_path, records)
    assert code == 1  # before: an IndexError traceback and no output at all
    assert [line["id"] for line in lines] == ["a", "bad", "c"]
    assert "outside the vocabulary" in lines[1]["error"] and lines[1]["samples"] == []
    assert all(line["error"] is None and len(line["samples"]) == 1 for line in (lines[0], lines[2]))
    assert "1 of 3 prompts failed" in capsys.readouterr().err


def test_a_kv_budget_below_prompt_plus_max_tokens_is_an_error_not_a_silent_cut(model_dir, tmp_path):
    code, lines = _generate(model_dir, tmp_path, [{"prompt": "Hi"}], "--max-tokens", str(MAX_CONTEXT))
    assert code == 1
    assert "exceed" in lines[0]["error"] and lines[0]["samples"] == []


def test_an_output_folder_is_refused_before_the_model_loads(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "Hi"}])
    folder = tmp_path / "outdir"
    folder.mkdir()
    # The model path does not exist: refusing the output first proves nothing was loaded (or generated).
    code = main(["generate", "--model", str(tmp_path / "no-model"), "--input", str(prompts), "--output", str(folder)])
    assert code == 2
    err = capsys.readouterr().err
    assert "--output" in err and "is a directory" in err and "no-model" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "outdir"]  # no outdir.tmp left behind


def test_every_prompt_served_exits_0(model_dir, tmp_path):
    code, lines = _generate(model_dir, tmp_path, [{"prompt": "Hi"}, {"messages": [{"role": "user", "content": "Yo"}]}])
    assert code == 0 and all(line["error"] is None for line in lines)
    assert not (tmp_path / "out.jsonl.tmp").exists()
