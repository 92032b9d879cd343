"""The engine on SmolLM2-135M-Instruct: greedy equals transformers token for token; stop strings across token
boundaries; `tao-engine generate` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tao_engine.engine import Engine, EngineConfig, SamplingParams

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is the capital of France?",
    "Write a SQL query that counts the rows of the table orders.",
    "Name three primary colors.",
    "Translate 'thank you' into German.",
]


@pytest.fixture(scope="module")
def engine(smollm2_ours) -> Engine:
    model, tokenizer = smollm2_ours
    return Engine(model, EngineConfig(kv_cache_bytes=128 * 2**20), tokenizer=tokenizer)


def test_engine_greedy_equals_transformers(engine: Engine, smollm2_transformers):
    hf_model, _ = smollm2_transformers
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    outs = engine.generate(chats, SamplingParams(temperature=0, max_tokens=24))
    eos = engine.tokenizer.eos_token_id
    for out in outs:
        prompt = out.prompt_token_ids
        with torch.no_grad():
            ref = hf_model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                    max_new_tokens=24, do_sample=False, eos_token_id=eos, pad_token_id=eos)
        assert out.samples[0].token_ids == ref[0, len(prompt):].tolist()
    assert "Paris" in outs[0].samples[0].text


def test_stop_string_across_token_boundaries(engine: Engine):
    chat = [{"role": "user", "content": QUESTIONS[0]}]
    full = engine.generate([chat], SamplingParams(temperature=0, max_tokens=24))[0].samples[0]
    assert full.text.startswith("The capital of France is Paris")
    # "is Par" starts inside the token " is" and ends inside " Paris".
    cut = engine.generate([chat], SamplingParams(temperature=0, max_tokens=24, stop=["is Par"]))[0].samples[0]
    assert cut.text == "The capital of France "
    assert cut.finish_reason == "stop" and cut.stop_reason == "is Par"
    kept = engine.generate([chat], SamplingParams(temperature=0, max_tokens=24, stop=["is Par"],
                                                  include_stop_str_in_output=True))[0].samples[0]
    assert kept.text == "The capital of France is Par"
    eos_end = engine.generate([chat], SamplingParams(temperature=0, max_tokens=24))[0].samples[0]
    assert eos_end.finish_reason == "stop" and eos_end.stop_reason == engine.tokenizer.eos_token_id
    short = engine.generate([chat], SamplingParams(temperature=0, max_tokens=3))[0].samples[0]
    assert short.finish_reason == "length" and len(short.token_ids) == 3


def test_generate_cli_writes_jsonl(smollm2_dir: Path, tmp_path: Path):
    inp = tmp_path / "prompts.jsonl"
    inp.write_text(
        json.dumps({"id": "a", "messages": [{"role": "user", "content": QUESTIONS[0]}]}) + "\n"
        + json.dumps({"prompt": "The sky is"}) + "\n"
    )
    out = tmp_path / "out.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "tao_engine", "generate", "--model", str(smollm2_dir), "--input", str(inp),
         "--output", str(out), "--n", "3", "--temperature", "0.7", "--max-tokens", "8", "--logprobs", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "tok/s" in run.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["a", "line-2"]
    for record in records:
        assert record["error"] is None and len(record["samples"]) == 3
        for sample in record["samples"]:
            assert 1 <= len(sample["token_ids"]) <= 8 and len(sample["logprobs"]) == len(sample["token_ids"])
            assert sample["finish_reason"] in ("stop", "length")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt key"}\n')
    run = subprocess.run([sys.executable, "-m", "tao_engine", "generate", "--model", str(smollm2_dir), "--input",
                          str(bad), "--output", str(tmp_path / "x.jsonl")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "bad.jsonl:1" in run.stderr
