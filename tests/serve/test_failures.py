"""When things go wrong: a failing engine step answers 500 (streamed: an error event) and the server serves on;
too many waiting requests get 503; stopping the server answers what is still running instead of hanging."""

from __future__ import annotations

import json
import threading
import time

import httpx

from tao_engine.serve import InferenceTable


def test_a_failing_step_answers_500_and_the_server_serves_on(start_server):
    server = start_server()
    fail = threading.Event()

    def maybe_fail(*_):
        if fail.is_set():
            raise RuntimeError("injected forward failure")

    server.engine.model.register_forward_pre_hook(maybe_fail)
    fail.set()
    whole = httpx.post(f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 3}, timeout=60)
    assert whole.status_code == 500
    assert whole.json()["error"]["code"] == "engine_error" and "injected" in whole.json()["error"]["message"]
    with httpx.stream("POST", f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 3, "stream": True},
                      timeout=60) as streamed:
        body = streamed.read().decode()
    assert streamed.status_code == 500 and "injected" in body, body  # failed before its first token: a plain error
    fail.clear()
    ok = httpx.post(f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 3}, timeout=60)
    assert ok.status_code == 200
    with InferenceTable(server.writer.path) as table:
        assert [r.request_id for r in table.rows()] == [ok.json()["id"]]  # failures are not logged as answers


def test_a_step_failing_mid_stream_ends_the_stream_with_an_error_event(start_server):
    server = start_server(step_delay_s=0.01)
    calls = [0]

    def fail_on_fifth(*_):
        calls[0] += 1
        if calls[0] == 5:
            raise RuntimeError("injected mid-stream failure")

    server.engine.model.register_forward_pre_hook(fail_on_fifth)
    with httpx.stream("POST", f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 20, "stream": True},
                      timeout=60) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200 and events[-1] == "[DONE]"
    assert "injected mid-stream failure" in json.loads(events[-2])["error"]["message"]
    assert any(json.loads(e).get("choices") for e in events[:-2])  # text came before the failure


def test_too_many_waiting_requests_get_503(start_server):
    server = start_server(step_delay_s=0.02, max_queued_requests=1)
    slow = threading.Thread(target=httpx.post, args=(f"{server.url}/v1/completions",),
                            kwargs={"json": {"prompt": "hi", "max_tokens": 30}, "timeout": 60})
    slow.start()
    while server.loop.outstanding == 0:
        time.sleep(0.005)
    busy = httpx.post(f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=60)
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "overloaded"
    slow.join(timeout=60)


def test_stop_answers_running_requests_instead_of_hanging(start_server):
    server = start_server(step_delay_s=0.02)
    results: list[httpx.Response] = []
    client = threading.Thread(target=lambda: results.append(httpx.post(
        f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 200}, timeout=60)))
    client.start()
    while server.loop.outstanding == 0:
        time.sleep(0.005)
    start = time.monotonic()
    server.stop(drain_timeout_s=0.2)
    client.join(timeout=30)
    assert time.monotonic() - start < 5.0
    assert results and results[0].status_code == 500 and "shutting down" in results[0].json()["error"]["message"]
