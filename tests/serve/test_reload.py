"""Reloading weights while clients keep sending: no request lost or logged twice, each request runs wholly on one
model version (its text equals that checkpoint's own greedy output), later rows record the new version, the served
module is the same object; a checkpoint of another shape is refused and serving goes on."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import openai
import pytest
import torch

from tao_engine import load_pretrained
from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.models.saving import save_pretrained
from tao_engine.serve import InferenceTable
from tests import helpers

PROMPT = [{"role": "user", "content": "What changed?"}]
MAX_TOKENS = 8


def _greedy_text(model_dir: Path) -> str:
    model, tokenizer = load_pretrained(model_dir, dtype=torch.float32)
    engine = Engine(model, EngineConfig(kv_cache_bytes=4 * 2**20, block_size=16), tokenizer=tokenizer)
    return engine.generate([PROMPT], SamplingParams(temperature=0, max_tokens=MAX_TOKENS))[0].samples[0].text


def test_reload_in_the_middle_of_traffic_loses_nothing(start_server, tiny_dirs):
    expected = {1: _greedy_text(tiny_dirs[0]), 2: _greedy_text(tiny_dirs[1])}
    assert expected[1] != expected[2], "the two checkpoints must answer differently for this test to see the swap"
    server = start_server(step_delay_s=0.003)
    module = server.engine.model
    answers: dict[str, tuple[int, str]] = {}  # response id -> (model version in the fingerprint, text)
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop(c: int) -> None:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
        try:
            while not stop.is_set():
                if c % 2:
                    out = client.chat.completions.create(model=server.served_model_name, messages=PROMPT,
                                                         temperature=0, max_tokens=MAX_TOKENS)
                    request_id, fingerprint, text = out.id, out.system_fingerprint, out.choices[0].message.content
                else:
                    chunks = list(client.chat.completions.create(model=server.served_model_name, messages=PROMPT,
                                                                 temperature=0, max_tokens=MAX_TOKENS, stream=True))
                    request_id, fingerprint = chunks[0].id, chunks[0].system_fingerprint
                    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
                with lock:
                    answers[request_id] = (int(fingerprint.removeprefix("tao-engine-v")), text)
                    if sum(v == 2 for v, _ in answers.values()) >= 24:
                        stop.set()
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    while len(answers) < 24 and not stop.is_set():
        stop.wait(0.01)
    while server.loop.outstanding == 0 and not stop.is_set():
        stop.wait(0.001)
    in_flight = server.loop.outstanding
    assert server.reload(tiny_dirs[1]) == 2
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert in_flight > 0, "the reload should have happened while requests were running"

    assert server.engine.model is module and server.model_version == 2
    reference = load_pretrained(tiny_dirs[1], dtype=torch.float32)[0].state_dict()
    assert all(torch.equal(t, reference[name]) for name, t in module.state_dict().items())

    with InferenceTable(server.writer.path) as table:
        rows = table.rows()
        versions = table.model_versions()
    assert len(rows) == len(answers) and {r.request_id for r in rows} == set(answers)
    for row in rows:
        version, text = answers[row.request_id]
        assert row.model_version == version and row.outputs == [text]
        assert text == expected[version], f"request {row.request_id} mixed weights of two versions"
    logged_versions = [r.model_version for r in rows]
    assert logged_versions.count(1) >= 24 and logged_versions.count(2) >= 24
    assert [(v, s) for v, s, _ in versions] == [(1, str(tiny_dirs[0])), (2, str(tiny_dirs[1].resolve()))]


def test_a_checkpoint_of_another_shape_is_refused_and_serving_goes_on(start_server, tiny_tokenizer, tmp_path):
    server = start_server(enable_reload_endpoint=True, api_key="k")
    other = save_pretrained(helpers.tiny_model(seed=3, vocab_size=tiny_tokenizer.vocab_size, hidden_size=32,
                                               num_attention_heads=2, num_key_value_heads=1),
                            tmp_path / "other", tokenizer=tiny_tokenizer)
    before = {name: t.clone() for name, t in server.engine.model.state_dict().items()}
    with pytest.raises(ValueError, match="different architecture"):
        server.reload(other)
    assert all(torch.equal(t, before[name]) for name, t in server.engine.model.state_dict().items())
    headers = {"Authorization": "Bearer k"}
    refused = httpx.post(f"{server.url}/admin/reload", json={"model": str(other)}, headers=headers, timeout=60)
    assert refused.status_code == 400 and "different architecture" in refused.json()["error"]["message"]
    assert httpx.post(f"{server.url}/admin/reload", json={"model": "x"}, timeout=60).status_code == 401
    answer = httpx.post(f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, headers=headers,
                        timeout=60)
    assert answer.status_code == 200 and answer.json()["system_fingerprint"] == "tao-engine-v1"
    with InferenceTable(server.writer.path) as table:
        assert len(table.model_versions()) == 1  # a refused reload registers no version


def test_reload_endpoint_swaps_weights_and_is_off_by_default(start_server, tiny_dirs):
    server = start_server(enable_reload_endpoint=True)
    done = httpx.post(f"{server.url}/admin/reload", json={"model": str(tiny_dirs[1])}, timeout=60)
    assert done.status_code == 200 and done.json()["model_version"] == 2
    answer = httpx.post(f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=60).json()
    assert answer["system_fingerprint"] == "tao-engine-v2"
    closed = start_server(table=False)
    assert httpx.post(f"{closed.url}/admin/reload", json={"model": str(tiny_dirs[1])}, timeout=60).status_code == 404
