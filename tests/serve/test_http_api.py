"""The HTTP API through real clients (openai, httpx): chat and completions, streamed and whole, equal to what the
engine generates in-process; usage and log-probs; every answer logged once; OpenAI-style errors; API key;
feedback."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from pathlib import Path

import httpx
import openai
import pytest
import torch

from tao_engine import load_pretrained
from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.serve import InferenceTable
from tests.tolerances import check

CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}]


def _client(server, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


def _reference(model_dir: Path, prompt, params: SamplingParams):
    model, tokenizer = load_pretrained(model_dir, dtype=torch.float32)
    engine = Engine(model, EngineConfig(kv_cache_bytes=4 * 2**20, block_size=16), tokenizer=tokenizer)
    return engine.generate([prompt], params)[0]


def _check_logprobs(served: list[float], ref, index: int, model_dir) -> None:
    """The server's log-probs of sample `index` against the engine run in this process: two fp32 paths over the same
    tokens (other batches, other threads), within their derived bound (tests/tolerances.py, sequence_logprobs)."""
    model, _ = load_pretrained(model_dir, dtype=torch.float32)
    sample = ref.samples[index]
    check("sequence_logprobs", torch.tensor(served), torch.tensor(sample.raw_logprobs, dtype=torch.float64),
          model=model, prompts=[list(ref.prompt_token_ids)], completions=[list(sample.token_ids)])


def test_chat_whole_and_streamed_equal_the_engine_and_are_logged(start_server, tiny_dirs):
    server = start_server()
    client = _client(server)
    whole = client.chat.completions.create(model=server.served_model_name, messages=CHAT, max_tokens=9,
                                           temperature=0, logprobs=True, user="alice")
    ref = _reference(tiny_dirs[0], CHAT, SamplingParams(temperature=0, max_tokens=9))
    choice = whole.choices[0]
    assert choice.message.content == ref.samples[0].text and choice.message.role == "assistant"
    assert choice.finish_reason == ref.samples[0].finish_reason
    _check_logprobs([t.logprob for t in choice.logprobs.content], ref, 0, tiny_dirs[0])
    assert all(t.top_logprobs == [] for t in choice.logprobs.content)
    assert whole.usage.prompt_tokens == len(ref.prompt_token_ids)
    assert whole.usage.completion_tokens == len(ref.samples[0].token_ids)
    assert whole.system_fingerprint == "tao-engine-v1" and whole.id.startswith("chatcmpl-")

    chunks = list(client.chat.completions.create(model=server.served_model_name, messages=CHAT, max_tokens=9,
                                                 temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ref.samples[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [ref.samples[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1

    with InferenceTable(server.writer.path) as table:
        rows = table.rows()
    assert [r.request_id for r in rows] == [whole.id, chunks[0].id]
    for row in rows:
        assert (row.kind, row.prompt, row.model_version, row.outputs) == ("chat", CHAT, 1, [ref.samples[0].text])
        assert row.finish_reasons == [ref.samples[0].finish_reason]
        assert (row.prompt_tokens, row.completion_tokens) == (whole.usage.prompt_tokens, whole.usage.completion_tokens)
        assert row.sampling["temperature"] == 0.0 and row.sampling["max_tokens"] == 9 and row.latency_s > 0
    assert rows[0].user == "alice"


def test_completions_text_and_token_ids_with_n_and_logprobs(start_server, tiny_dirs):
    server = start_server()
    client = _client(server)
    params = SamplingParams(n=3, temperature=0.8, seed=11, max_tokens=6)
    ref = _reference(tiny_dirs[0], "Once upon a time", params)
    whole = client.completions.create(model=server.served_model_name, prompt="Once upon a time", n=3, seed=11,
                                      temperature=0.8, max_tokens=6, logprobs=0)
    assert [c.text for c in sorted(whole.choices, key=lambda c: c.index)] == [s.text for s in ref.samples]
    for index, (c, s) in enumerate(zip(sorted(whole.choices, key=lambda c: c.index), ref.samples, strict=True)):
        _check_logprobs(c.logprobs.token_logprobs, ref, index, tiny_dirs[0])
        assert len(c.logprobs.tokens) == len(s.token_ids) and c.logprobs.text_offset[0] == 0
    assert whole.usage.completion_tokens == sum(len(s.token_ids) for s in ref.samples)

    streamed = ["", "", ""]
    finish: dict[int, str] = {}
    for chunk in client.completions.create(model=server.served_model_name, prompt="Once upon a time", n=3, seed=11,
                                           temperature=0.8, max_tokens=6, stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.text
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert streamed == [s.text for s in ref.samples]
    assert finish == {i: s.finish_reason for i, s in enumerate(ref.samples)}

    ids = ref.prompt_token_ids
    by_ids = client.completions.create(model=server.served_model_name, prompt=ids, n=3, seed=11, temperature=0.8,
                                       max_tokens=6)
    assert [c.text for c in sorted(by_ids.choices, key=lambda c: c.index)] == streamed
    with InferenceTable(server.writer.path) as table:
        rows = table.rows()
    assert [r.prompt for r in rows] == ["Once upon a time", "Once upon a time", ids]
    assert rows[0].prompt_hash == rows[1].prompt_hash != rows[2].prompt_hash
    assert all(r.outputs == streamed and r.sampling["n"] == 3 for r in rows)


def test_models_health_and_routes(start_server):
    server = start_server()
    models = _client(server).models.list()
    assert [m.id for m in models.data] == [server.served_model_name]
    assert httpx.get(f"{server.url}/v1/models/{server.served_model_name}").json()["object"] == "model"
    health = httpx.get(f"{server.url}/health").json()
    assert health == {"status": "ok", "model": server.served_model_name, "model_version": 1}
    missing = httpx.get(f"{server.url}/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"
    assert httpx.get(f"{server.url}/v1/completions").status_code == 405


def _post(server, path: str, body, **kw) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}{path}", content=content, headers={"Content-Type": "application/json"},
                      timeout=60, **kw)


def test_bad_requests_get_openai_errors_and_are_not_logged(start_server):
    server = start_server(max_request_bytes=4096, max_tokens_cap=64)
    client = _client(server)
    name = server.served_model_name

    def error(response: httpx.Response, status: int) -> dict:
        assert response.status_code == status, response.text
        err = response.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
        return err

    assert error(_post(server, "/v1/chat/completions", b"{not json"), 400)["code"] == "invalid_json"
    assert error(_post(server, "/v1/chat/completions", b"x" * 5000), 413)["code"] == "request_too_large"
    err = error(_post(server, "/v1/chat/completions", {"messages": CHAT, "bogus": 1}), 400)
    assert (err["param"], err["code"]) == ("bogus", "unknown_parameter")
    assert error(_post(server, "/v1/chat/completions", {"messages": CHAT, "model": "gpt-4"}), 404)["code"] == (
        "model_not_found")
    err = error(_post(server, "/v1/completions", {"prompt": "x " * 300, "max_tokens": 8}), 400)
    assert err["code"] == "context_length_exceeded"
    assert error(_post(server, "/v1/completions", {"prompt": [1, 10**6]}), 400)["param"] == "prompt"
    assert error(_post(server, "/v1/completions", {"prompt": "x", "max_tokens": 65}), 400)["param"] == "max_tokens"

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=name, messages=CHAT, temperature=-1)
    assert info.value.body["param"] == "temperature" and "SamplingParams" not in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=name, messages=CHAT, logprobs=True, top_logprobs=2)
    assert info.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=name, messages=CHAT, stream=True, extra_body={"tools": [{"x": 1}]})
    assert info.value.body["code"] == "unsupported_parameter"
    # The connection of a refused request stays usable for the next one
    with httpx.Client(base_url=server.url, timeout=60) as keep_alive:
        assert keep_alive.post("/v1/completions", json={"prompt": "x", "n": 0}).status_code == 400
        assert keep_alive.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200
    with InferenceTable(server.writer.path) as table:
        assert table.count() == 1


def test_api_key_is_required_when_set(start_server):
    server = start_server(api_key="s3cret")
    assert httpx.get(f"{server.url}/health").status_code == 200  # probes need no key
    with pytest.raises(openai.AuthenticationError) as info:
        _client(server, "wrong").completions.create(model=server.served_model_name, prompt="x", max_tokens=2)
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    assert _post(server, "/v1/completions", {"prompt": "x"}).status_code == 401
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    done = _client(server, "s3cret").completions.create(model=server.served_model_name, prompt="x", max_tokens=2)
    assert done.choices[0].finish_reason in ("stop", "length")


def test_feedback_is_recorded_by_response_id(start_server):
    server = start_server()
    answer = _client(server).chat.completions.create(model=server.served_model_name, messages=CHAT, max_tokens=3)
    ok = _post(server, "/v1/feedback", {"id": answer.id, "feedback": {"rating": 5, "comment": "good"}})
    assert ok.status_code == 200 and ok.json()["updated"] is True
    assert _post(server, "/v1/feedback", {"id": "chatcmpl-unknown", "feedback": 1}).status_code == 404
    assert _post(server, "/v1/feedback", {"id": answer.id}).status_code == 400
    with InferenceTable(server.writer.path) as table:
        row = table.get(answer.id)
    assert row.feedback == {"rating": 5, "comment": "good"} and math.isfinite(row.feedback_at)


def test_without_a_table_the_server_answers_and_feedback_is_refused(start_server):
    server = start_server(table=False)
    answer = _client(server).completions.create(model=server.served_model_name, prompt="hi", max_tokens=2)
    assert answer.choices[0].text is not None
    assert _post(server, "/v1/feedback", {"id": answer.id, "feedback": 1}).status_code == 400


def test_the_answer_waits_until_its_row_is_committed(start_server):
    server = start_server()
    blocker = sqlite3.connect(server.writer.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the writer cannot commit
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", _post(server, "/v1/completions",
                                                                          {"prompt": "hi", "max_tokens": 2})))
    thread.start()
    thread.join(timeout=1.0)
    assert "r" not in result and server.loop.outstanding == 0  # generated, yet unanswered: the row is not on disk
    blocker.execute("ROLLBACK")
    blocker.close()
    thread.join(timeout=30)
    assert result["r"].status_code == 200
    with InferenceTable(server.writer.path) as table:
        assert table.get(result["r"].json()["id"]) is not None
