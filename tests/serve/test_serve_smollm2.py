"""The real model behind the API: SmolLM2-135M-Instruct answers a chat over HTTP (streamed) exactly as the engine
answers in-process, and the row is logged."""

from __future__ import annotations

import openai
import pytest

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.serve import InferenceServer, InferenceTable, ServeConfig

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def test_smollm2_chat_over_http_equals_the_engine(smollm2_ours, smollm2_dir, tmp_path):
    model, tokenizer = smollm2_ours
    engine = Engine(model, EngineConfig(kv_cache_bytes=64 * 2**20, max_num_seqs=4), tokenizer=tokenizer)
    expected = engine.generate([CHAT], SamplingParams(temperature=0, max_tokens=12))[0].samples[0].text
    assert "Paris" in expected
    with InferenceServer(engine, ServeConfig(port=0), tmp_path / "infer.sqlite", model_source=smollm2_dir) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
        chunks = list(client.chat.completions.create(model=server.served_model_name, messages=CHAT, temperature=0,
                                                     max_tokens=12, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    with InferenceTable(tmp_path / "infer.sqlite") as table:
        (row,) = table.rows()
    assert row.outputs == [expected] and row.prompt == CHAT and row.model_version == 1
