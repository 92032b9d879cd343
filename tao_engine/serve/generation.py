"""One generation request from a handler's point of view: submit, wait for updates, record, answer.

The transport (http_handler.py) sends JSON or server-sent events; this module decides what to send and when:
the table row is committed before the response (or, when streaming, the finish chunks and `[DONE]`) goes out, and a
client that goes away has its request aborted (its row records finish reason "abort").
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from tao_engine.serve.engine_loop import ERROR_INVALID, RequestStream, Update
from tao_engine.serve.errors import SERVER_ERROR, APIError
from tao_engine.serve.openai_responses import (
    Choices,
    ChunkWriter,
    ResponseHead,
    chat_completion,
    text_completion,
)
from tao_engine.serve.server import InferenceServer, PreparedRequest


class Transport(Protocol):
    def send_json(self, status: int, body: dict[str, Any]) -> None: ...

    def start_events(self) -> None: ...

    def send_event(self, data: dict[str, Any] | str) -> None:
        """Raises OSError (BrokenPipeError, ConnectionResetError...) when the client is gone."""

    def end_events(self) -> None: ...

    def client_gone(self) -> bool: ...


class _Waiter:
    """Reads one request's updates, aborting it once if the client disconnects meanwhile."""

    def __init__(self, server: InferenceServer, prepared: PreparedRequest, stream: RequestStream,
                 transport: Transport) -> None:
        self.server, self.prepared, self.stream, self.transport = server, prepared, stream, transport
        self.aborted = False
        self._next_check = time.monotonic() + server.config.disconnect_poll_s

    def abort(self) -> None:
        if not self.aborted:
            self.aborted = True
            self.server.loop.abort(self.prepared.request_id)

    def next(self) -> Update:
        poll = self.server.config.disconnect_poll_s
        while True:
            update = self.stream.get(timeout=poll)
            now = time.monotonic()
            if not self.aborted and now >= self._next_check:  # also while updates keep coming
                self._next_check = now + poll
                if self.transport.client_gone():
                    self.abort()
            if update is not None:
                return update
            if not self.server.loop.alive:
                update = self.stream.get(timeout=poll)  # the loop publishes every final before it ends
                if update is not None:
                    return update
                return Update((), True, self.server.model_version, len(self.prepared.prompt_token_ids),
                              "the engine loop stopped", "internal")


def _error_for(update: Update) -> APIError:
    if update.error_kind == ERROR_INVALID:
        return APIError(400, f"the engine refused the request: {update.error}", param=None, code="invalid_value")
    return APIError(500, f"generation failed: {update.error}", SERVER_ERROR, code="engine_error")


def serve_generation(server: InferenceServer, kind: str, body: Any, transport: Transport) -> None:
    """Answer one /v1/chat/completions or /v1/completions request (APIError before anything was sent)."""
    prepared = server.prepare(kind, body)
    start = time.perf_counter()
    with server.active():
        stream = server.submit(prepared)
        waiter = _Waiter(server, prepared, stream, transport)
        if prepared.request.stream:
            _streamed(server, prepared, waiter, transport, start)
        else:
            _whole(server, prepared, waiter, transport, start)


def _head(server: InferenceServer, prepared: PreparedRequest, version: int) -> ResponseHead:
    return ResponseHead(prepared.request_id, prepared.created, server.served_model_name, version)


def _whole(server: InferenceServer, prepared: PreparedRequest, waiter: _Waiter, transport: Transport,
           start: float) -> None:
    choices = Choices(prepared.params.n)
    update = waiter.next()
    choices.add(update.deltas)
    while not update.finished:
        update = waiter.next()
        choices.add(update.deltas)
    if update.error is not None:
        if waiter.aborted:
            return
        raise _error_for(update)
    server.record(prepared, choices, update.model_version, update.prompt_tokens, time.perf_counter() - start)
    if waiter.aborted:
        return
    build = chat_completion if prepared.request.kind == "chat" else text_completion
    head = _head(server, prepared, update.model_version)
    transport.send_json(200, build(head, choices, update.prompt_tokens, server.tokenizer, prepared.request.logprobs))


def _streamed(server: InferenceServer, prepared: PreparedRequest, waiter: _Waiter, transport: Transport,
              start: float) -> None:
    request = prepared.request
    choices = Choices(prepared.params.n)
    update = waiter.next()  # the first update names the model version the request runs on
    chunks = ChunkWriter(request.kind, _head(server, prepared, update.model_version), prepared.params.n,
                         server.tokenizer, request.logprobs, request.include_usage)
    if update.error is not None and update.finished and not any(d.text or d.token_ids for d in update.deltas):
        raise _error_for(update)  # refused before anything ran: a plain error response, not a stream

    def send(items: list[dict[str, Any]] | list[str]) -> None:
        if waiter.aborted:
            return
        try:
            for item in items:
                transport.send_event(item)
        except OSError:
            waiter.abort()

    transport.start_events()
    send(chunks.opening())
    while True:
        choices.add(update.deltas)
        send(chunks.content(update.deltas))
        if update.finished:
            break
        update = waiter.next()
    if update.error is not None:
        send([APIError(500, f"generation failed: {update.error}", SERVER_ERROR, code="engine_error").body(), "[DONE]"])
        _end(transport, waiter)
        return
    try:
        server.record(prepared, choices, update.model_version, update.prompt_tokens, time.perf_counter() - start)
    except APIError as exc:
        send([exc.body(), "[DONE]"])
        _end(transport, waiter)
        return
    send([*chunks.closing(choices.finish_reasons, update.prompt_tokens, choices.completion_tokens), "[DONE]"])
    _end(transport, waiter)


def _end(transport: Transport, waiter: _Waiter) -> None:
    if waiter.aborted:
        return
    try:
        transport.end_events()
    except OSError:
        waiter.aborted = True
