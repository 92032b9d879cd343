"""One generation request on the event loop: submit, await the engine's updates, record, answer.

The engine thread hands each update to this request's asyncio queue (`call_soon_threadsafe`), so waiting costs no
thread. A task watches the connection: when the client goes away (`http.disconnect`) the request is aborted, and its
row still records what was generated (finish reason "abort"). The table row is committed before the response goes
out (streaming: before the finish chunks and `[DONE]`), so every answer a client got is in the table.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tao_engine.serve.engine_loop import ERROR_INVALID, Update
from tao_engine.serve.errors import SERVER_ERROR, APIError
from tao_engine.serve.http_server import PEER_EOF
from tao_engine.serve.openai_responses import Choices, ChunkWriter, ResponseHead, chat_completion, text_completion
from tao_engine.serve.service import InferenceService, PreparedRequest


class _Updates:
    """The request's updates, from the engine thread to this event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Update] = asyncio.Queue()

    def deliver(self, update: Update) -> None:  # called in the engine thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, update)

    async def next(self) -> Update:
        return await self.queue.get()


class _Client:
    """The connection's state: `gone` once the client disconnected (its request is then aborted, once)."""

    def __init__(self, scope: Scope, receive: Receive, abort: Callable[[], None]) -> None:
        self.receive, self.abort_request = receive, abort
        # Set when the client shut its sending side (tao_engine.serve.http_server): it may be gone, or waiting.
        self.peer_eof: asyncio.Event | None = scope.get("extensions", {}).get(PEER_EOF)
        self.gone = False
        self.answered = False  # the last byte is being sent: a disconnect now is the normal end

    async def watch(self) -> None:
        waits = [asyncio.ensure_future(self._disconnect())]
        if self.peer_eof is not None:
            waits.append(asyncio.ensure_future(self.peer_eof.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if not self.answered:
            self.lost()

    async def _disconnect(self) -> None:
        # The body was read before the answer began: any other message until the disconnect carries nothing.
        while (await self.receive())["type"] != "http.disconnect":
            continue

    def lost(self) -> None:
        if not self.gone:
            self.gone = True
            self.abort_request()


def _error_for(update: Update) -> APIError:
    if update.error_kind == ERROR_INVALID:
        return APIError(400, f"the engine refused the request: {update.error}", param=None, code="invalid_value")
    return APIError(500, f"generation failed: {update.error}", SERVER_ERROR, code="engine_error")


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class GenerationResponse(Response):
    """The answer to one prepared /v1/chat/completions or /v1/completions request (JSON or server-sent events)."""

    def __init__(self, server: InferenceService, prepared: PreparedRequest) -> None:
        super().__init__(status_code=200)
        self.server, self.prepared = server, prepared
        self.start = time.perf_counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        updates = _Updates(asyncio.get_running_loop())
        client = _Client(scope, receive, lambda: self.server.loop.abort(self.prepared.request_id))
        with self.server.active():
            try:
                self.server.submit(self.prepared, updates.deliver)
            except APIError as exc:
                await send_json(send, exc.status, exc.body())
                return
            watcher = asyncio.create_task(client.watch())
            try:
                if self.prepared.request.stream:
                    await self._streamed(send, updates, client)
                else:
                    await self._whole(send, updates, client)
            except APIError as exc:  # nothing was sent yet
                if not client.gone:
                    await send_json(send, exc.status, exc.body())
            finally:
                watcher.cancel()

    def _head(self, version: int) -> ResponseHead:
        p = self.prepared
        return ResponseHead(p.request_id, p.created, self.server.served_model_name, version)

    async def _record(self, choices: Choices, update: Update) -> None:
        future = self.server.record(self.prepared, choices, update.model_version, update.prompt_tokens,
                                    time.perf_counter() - self.start)
        if future is None:
            return
        try:
            await asyncio.wrap_future(future)
        except Exception as exc:
            raise APIError(500, f"the request could not be recorded in the inference table: {exc}", SERVER_ERROR,
                           code="table_write_failed") from None

    async def _whole(self, send: Send, updates: _Updates, client: _Client) -> None:
        choices = Choices(self.prepared.params.n)
        update = await updates.next()
        choices.add(update.deltas)
        while not update.finished:
            update = await updates.next()
            choices.add(update.deltas)
        if update.error is not None:
            if client.gone:
                return
            raise _error_for(update)
        await self._record(choices, update)
        if client.gone:
            return
        request = self.prepared.request
        build = chat_completion if request.kind == "chat" else text_completion
        body = build(self._head(update.model_version), choices, update.prompt_tokens, self.server.tokenizer,
                     request.logprobs)
        client.answered = True
        await send_json(send, 200, body)

    async def _streamed(self, send: Send, updates: _Updates, client: _Client) -> None:
        request = self.prepared.request
        choices = Choices(self.prepared.params.n)
        update = await updates.next()  # the first update names the model version the request runs on
        chunks = ChunkWriter(request.kind, self._head(update.model_version), self.prepared.params.n,
                             self.server.tokenizer, request.logprobs, request.include_usage)
        if update.error is not None and update.finished and not any(d.text or d.token_ids for d in update.deltas):
            raise _error_for(update)  # refused before anything ran: a plain error response, not a stream

        async def emit(items: list[dict[str, Any]] | list[str], last: bool = False) -> None:
            if client.gone:
                return
            body = b"".join(f"data: {i if isinstance(i, str) else json.dumps(i, ensure_ascii=False)}\n\n".encode()
                            for i in items)
            client.answered = last
            try:
                await send({"type": "http.response.body", "body": body, "more_body": not last})
            except OSError:  # the connection broke while we wrote
                client.lost()

        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        await emit(chunks.opening())
        while True:
            choices.add(update.deltas)
            await emit(chunks.content(update.deltas))
            if update.finished:
                break
            update = await updates.next()
        if update.error is not None:
            error = APIError(500, f"generation failed: {update.error}", SERVER_ERROR, code="engine_error")
            await emit([error.body(), "[DONE]"], last=True)
            return
        try:
            await self._record(choices, update)
        except APIError as exc:
            await emit([exc.body(), "[DONE]"], last=True)
            return
        await emit([*chunks.closing(choices.finish_reasons, update.prompt_tokens, choices.completion_tokens), "[DONE]"],
                   last=True)
