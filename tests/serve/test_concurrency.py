"""Many clients at once: every request answered and logged exactly once, served by batched steps; a client that
goes away has its request aborted (and logged as such) without holding up the others."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import openai

from tao_engine.serve import InferenceTable

CLIENTS = 32
REQUESTS_PER_CLIENT = 4


def _one_request(client: openai.OpenAI, model: str, c: int, r: int) -> tuple[str, list[str]]:
    """(response id, text of each choice) for request r of client c; the four kinds of request in turn."""
    kind = (c + r) % 4
    messages = [{"role": "user", "content": f"client {c} request {r}"}]
    if kind == 0:
        out = client.chat.completions.create(model=model, messages=messages, max_tokens=5, seed=c * 100 + r)
        return out.id, [out.choices[0].message.content]
    if kind == 1:
        chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=5, stream=True))
        return chunks[0].id, ["".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)]
    if kind == 2:
        out = client.completions.create(model=model, prompt=f"client {c} request {r}", max_tokens=5, n=2)
        return out.id, [ch.text for ch in sorted(out.choices, key=lambda ch: ch.index)]
    texts = ["", ""]
    request_id = ""
    for chunk in client.completions.create(model=model, prompt=f"client {c} request {r}", max_tokens=5, n=2,
                                           stream=True):
        request_id = chunk.id
        for ch in chunk.choices:
            texts[ch.index] += ch.text
    return request_id, texts


def test_32_concurrent_clients_each_answered_and_logged_exactly_once(start_server):
    server = start_server(max_num_seqs=64)
    steps_before = server.engine.stats()["steps"]
    barrier = threading.Barrier(CLIENTS)
    answers: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(c: int) -> None:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
        barrier.wait()
        try:
            for r in range(REQUESTS_PER_CLIENT):
                request_id, texts = _one_request(client, server.served_model_name, c, r)
                with lock:
                    assert request_id not in answers
                    answers[request_id] = texts
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:3]
    assert len(answers) == CLIENTS * REQUESTS_PER_CLIENT

    with InferenceTable(server.writer.path) as table:
        rows = table.rows()
    assert len(rows) == len(answers)  # no request logged twice, none missing
    assert {r.request_id: list(r.outputs) for r in rows} == answers
    assert all(r.finish_reasons[0] in ("stop", "length") for r in rows)
    completion_tokens = sum(r.completion_tokens for r in rows)
    steps = server.engine.stats()["steps"] - steps_before
    # One request at a time would take at least one step per token; batching shares steps between requests.
    assert steps * 3 < completion_tokens, (steps, completion_tokens)
    assert server.loop.outstanding == 0


def _wait_idle(server, timeout: float) -> float:
    start = time.monotonic()
    while server.loop.outstanding and time.monotonic() - start < timeout:
        time.sleep(0.01)
    return time.monotonic() - start


def _rows_when(server, count: int, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    with InferenceTable(server.writer.path) as table:
        while True:
            rows = table.rows()
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.01)


def test_a_disconnected_client_has_its_request_aborted_and_logged(start_server):
    server = start_server(step_delay_s=0.02)  # 200 tokens would take 4 s or more
    body = {"model": server.served_model_name, "prompt": "tell me a long story", "max_tokens": 200}

    with httpx.Client(base_url=server.url, timeout=30) as client:  # streamed: close after two events
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            events: list[dict] = []
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                if len(events) == 2:
                    break
    assert _wait_idle(server, timeout=10.0) < 3.0  # unaborted, 200 tokens take 4 s or more

    raw = socket.create_connection(("127.0.0.1", server.port))  # whole: close while it runs
    payload = json.dumps(body).encode()
    raw.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
    while server.loop.outstanding == 0:
        time.sleep(0.005)
    time.sleep(0.2)
    raw.close()
    assert _wait_idle(server, timeout=10.0) < 3.0

    rows = _rows_when(server, count=2, timeout=10.0)  # a handler writes its row after the engine lets go
    assert len(rows) == 2 and rows[0].request_id == events[0]["id"]
    for row in rows:
        assert row.finish_reasons == ["abort"] and row.completion_tokens < 200
    # The server goes on serving
    quick = httpx.post(f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30)
    assert quick.status_code == 200 and quick.json()["choices"][0]["finish_reason"] in ("stop", "length")
