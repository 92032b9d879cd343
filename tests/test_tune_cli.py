"""`tao-engine tune --config tao.toml` end to end on a tiny model directory: the run writes its final model and the
printed summary reports rewards and the tuning compute spent (generated tokens, exploration tokens per prompt)."""

from __future__ import annotations

import json
from pathlib import Path

from tao_engine.cli import main
from tao_engine.models.saving import save_pretrained
from tao_engine.tokenizer import Tokenizer
from tests import helpers
from tests.flywheel.conftest import EOS, tao_table, write_toml
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir


def test_tune_runs_from_toml_and_prints_the_compute_it_spent(tmp_path: Path, capsys):
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template("smollm2.jinja")}
    tokenizer = Tokenizer.from_dir(write_tokenizer_dir(tmp_path / "tok", train_byte_level_bpe(CHATML_SPECIALS), config))
    model = helpers.tiny_model(seed=0, vocab_size=tokenizer.vocab_size, eos_token_id=EOS, max_position_embeddings=256)
    model_dir = save_pretrained(model, tmp_path / "tiny", tokenizer=tokenizer)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("What is 2+2?", "Name a colour.", "Hi")))
    table = tao_table(model_dir, tmp_path / "run", steps=2)
    table["data"]["prompts"] = str(prompts)
    toml = write_toml(table, tmp_path / "tao.toml")

    assert main(["tune", "--config", str(toml), "--quiet"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])  # the summary is the last thing printed, one JSON object

    n, max_tokens, per_step = table["sampling"]["n"], table["sampling"]["max_tokens"], table["data"]["prompts_per_step"]
    assert summary["steps"] == 2 and summary["reward_first"] is not None and summary["reward_last"] is not None
    assert summary["exploration_tokens_per_prompt"] == n * max_tokens  # plain: n samples of max_tokens (ignore_eos)
    assert summary["generated_tokens"] == 2 * per_step * n * max_tokens
    assert (Path(summary["final_model"]) / "config.json").is_file()
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [1, 2]
