"""The HTTP API as an ASGI app (FastAPI, served by uvicorn: tao_engine/serve/http_server.py).

    GET  /health                 {"status": "ok", "model": ..., "model_version": ...}  (no API key needed)
    GET  /v1/models              the served model
    GET  /v1/models/{id}
    POST /v1/chat/completions    OpenAI chat completions, `stream` true or false (server-sent events)
    POST /v1/completions         OpenAI (legacy) completions, `stream` true or false
    POST /v1/feedback            {"id": response id or row id, "feedback": any JSON value}
    POST /admin/reload           {"model": DIR}, only with ServeConfig.enable_reload_endpoint

Every failure is an OpenAI-style error object with its status (tao_engine.serve.errors), a 4xx for anything a
client sent wrong: a body past `max_request_bytes` (413, before it is read), one that never arrives (408 after
`idle_timeout_s`), bad JSON (tao_engine.serve.json_body), bad parameters (tao_engine.serve.request_models). Request
bodies are read here, not by FastAPI, so that those limits and messages hold; the generated pydantic models are
declared on the routes for the OpenAPI schema (`/openapi.json`).
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from tao_engine.serve.asgi_generation import GenerationResponse
from tao_engine.serve.errors import AUTHENTICATION, NOT_FOUND, SERVER_ERROR, APIError, bad_request
from tao_engine.serve.json_body import decode_json_body
from tao_engine.serve.request_models import ChatCompletionRequest, CompletionRequest
from tao_engine.serve.service import InferenceService


def create_app(server: InferenceService) -> FastAPI:
    app = FastAPI(title="tao-engine", docs_url=None, redoc_url=None)
    config = server.config

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            error = APIError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed")
        elif exc.status_code == 404:
            error = APIError(404, f"Invalid URL ({request.method} {request.url.path})", NOT_FOUND, code="unknown_url")
        else:
            error = APIError(exc.status_code, str(exc.detail))
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:  # a bug: answer 500, serve on
        error = APIError(500, f"internal error: {type(exc).__name__}: {exc}", SERVER_ERROR)
        return JSONResponse(error.body(), status_code=500)

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise APIError(401, "You didn't provide an API key: send `Authorization: Bearer <key>`", AUTHENTICATION,
                           code="invalid_api_key")
        if not hmac.compare_digest(header[len("Bearer "):].strip().encode(), config.api_key.encode()):
            raise APIError(401, "Incorrect API key provided", AUTHENTICATION, code="invalid_api_key")

    async def json_body(request: Request) -> Any:
        return decode_json_body(await read_body(request, config.max_request_bytes, config.idle_timeout_s))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": server.served_model_name, "model_version": server.model_version}

    def card() -> dict[str, Any]:
        return {"id": server.served_model_name, "object": "model", "created": server.created, "owned_by": "tao-engine"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        if model_id != server.served_model_name:
            raise APIError(404, f"The model `{model_id}` does not exist", param="model", code="model_not_found")
        return card()

    async def generation(kind: str, request: Request) -> Response:
        authorize(request)
        body = await json_body(request)
        # Tokenizing a long prompt and rendering a chat template take CPU: off the event loop.
        prepared = await asyncio.to_thread(server.prepare, kind, body)
        return GenerationResponse(server, prepared)

    @app.post("/v1/chat/completions", openapi_extra=_schema_of(ChatCompletionRequest))
    async def chat_completions(request: Request) -> Response:
        return await generation("chat", request)

    @app.post("/v1/completions", openapi_extra=_schema_of(CompletionRequest))
    async def completions(request: Request) -> Response:
        return await generation("completion", request)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        authorize(request)
        body = await json_body(request)
        if not isinstance(body, dict) or set(body) != {"id", "feedback"}:
            raise bad_request("feedback takes exactly {'id': <response id or row id>, 'feedback': <any JSON value>}")
        key, value = body["id"], body["feedback"]
        if isinstance(key, bool) or not isinstance(key, (int, str)) or value is None:
            raise bad_request("feedback: id must be a response id (str) or a row id (int), feedback not null", "id")
        if isinstance(key, int) and not 0 < key < 2**63:  # row ids are positive SQLite integers
            raise APIError(404, f"no logged request has id {key!r}", NOT_FOUND, "id", "not_found")
        if server.writer is None:
            raise bad_request("this server keeps no inference table: start it with a table to record feedback")
        if not await asyncio.wrap_future(server.writer.set_feedback(key, value)):
            raise APIError(404, f"no logged request has id {key!r}", NOT_FOUND, "id", "not_found")
        return {"id": key, "object": "feedback", "updated": True}

    if config.enable_reload_endpoint:
        @app.post("/admin/reload")
        async def reload(request: Request) -> dict[str, Any]:
            authorize(request)
            body = await json_body(request)
            if not isinstance(body, dict) or set(body) != {"model"} or not isinstance(body["model"], str):
                raise bad_request("reload takes {'model': <model directory>}", "model")
            try:
                version = await asyncio.to_thread(server.reload, body["model"])
            except (ValueError, FileNotFoundError) as exc:
                raise bad_request(f"reload failed: {exc}", "model") from None
            return {"model": body["model"], "model_version": version}

    return app


def _schema_of(model: Any) -> dict[str, Any]:
    """The request body of a route in the OpenAPI schema: the generated pydantic model's JSON schema."""
    return {"requestBody": {"content": {"application/json": {"schema": model.model_json_schema()}},
                            "required": True}}


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, at most `limit` bytes (413 otherwise, from Content-Length before reading when it is given), within
    `timeout_s` of silence (408), whole (400 when the client ends it short)."""
    raw_length = request.headers.get("content-length")
    if raw_length is not None and int(raw_length) > limit:  # h11 has refused a malformed one already (400)
        raise APIError(413, f"the request body has {raw_length} bytes; this server accepts at most {limit}",
                       code="request_too_large")
    chunks: list[bytes] = []
    size = 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout_s)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise APIError(408, f"the request body did not arrive: nothing came for {timeout_s}s",
                           code="request_timeout") from None
        except ClientDisconnect:
            raise bad_request("the request body ended before Content-Length bytes arrived") from None
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the request body passed {limit} bytes, the most this server accepts",
                           code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)
