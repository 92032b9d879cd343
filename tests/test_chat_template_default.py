"""A plain {"prompt": text} reaches an instruct model as one user turn of its chat template unless the user turns that
off (issue 23 item 1): `generate` and `tune` render it by default, `--no-chat-template` / `[data] chat_template =
false` send the raw text, and each command says at startup which applies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tao_engine.cli import main
from tao_engine.engine.prompts import as_user_turn, plain_prompt_rendering
from tao_engine.tokenizer import Tokenizer
from tests.run_fixtures import tiny_model_dir, to_toml, tune_table, write_jsonl

USER_TURN = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"  # smollm2.jinja, after its system turn


def template_seen(prompts: list[str], completions: list[str], **_: object) -> list[float]:
    """1 when the prompt the scorers see was rendered by the chat template, else 0."""
    return [1.0 if "<|im_start|>user\n" in prompt else 0.0 for prompt in prompts]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def test_text_becomes_one_user_turn_only_with_a_template_and_the_switch_on(model_dir):
    tokenizer = Tokenizer.from_dir(model_dir)
    assert as_user_turn("Hi", tokenizer, True) == [{"role": "user", "content": "Hi"}]
    assert as_user_turn("Hi", tokenizer, False) == "Hi"
    chat = [{"role": "user", "content": "Hi"}]
    assert as_user_turn(chat, tokenizer, False) is chat and as_user_turn([1, 2], tokenizer, True) == [1, 2]
    assert as_user_turn("Hi", None, True) == "Hi"  # no tokenizer, no template: raw text
    assert "raw text" in plain_prompt_rendering(None, True, "off", "on")
    assert "(off: raw text)" in plain_prompt_rendering(tokenizer, True, "off", "on")


def test_generate_renders_plain_prompts_with_the_template_unless_told_not_to(model_dir, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "What is 2+2?"}])
    rendered = []
    for extra in ((), ("--no-chat-template",)):
        out = tmp_path / f"out{len(extra)}.jsonl"
        code = main(["generate", "--model", str(model_dir), "--input", str(prompts), "--output", str(out), "--quiet",
                     "--max-tokens", "2", *extra])
        assert code == 0
        rendered.append(json.loads(out.read_text())["prompt"])
        rendered.append(capsys.readouterr().err)
    assert rendered[0].endswith(USER_TURN) and "rendered by the model's chat template" in rendered[1]
    assert rendered[2] == "What is 2+2?" and "sent as raw text" in rendered[3]


@pytest.mark.parametrize("chat_template", [True, False])
def test_tune_trains_on_what_it_announces(model_dir, tmp_path, capsys, chat_template):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "What is 2+2?"}, {"prompt": "Name a colour."}])
    table = tune_table(model_dir, prompts, tmp_path / "run", steps=1,
                       scorer="tests.test_chat_template_default:template_seen")
    table["data"]["chat_template"] = chat_template
    table["probe"] = {"before_tune": False}
    assert main(["tune", "--config", str(to_toml(table, tmp_path / "tao.toml")), "--quiet"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out[captured.out.index("{"):])
    assert summary["reward_first"] == (1.0 if chat_template else 0.0)  # what the scorers saw, hence what was sampled
    announced = "rendered by the model's chat template" if chat_template else "sent as raw text"
    assert f"tao-engine tune: plain-text prompts are {announced}" in captured.err
