"""HTTP/1.1 on the standard library: routes, API key, body limits, JSON and server-sent-event responses.

One thread per connection (ThreadingHTTPServer); keep-alive connections are reused and closed after
`ServeConfig.idle_timeout_s` of silence. Streams use chunked transfer encoding, so a connection survives a stream.

    GET  /health                 {"status": "ok", "model": ..., "model_version": ...}  (no API key needed)
    GET  /v1/models              the served model
    GET  /v1/models/{id}
    POST /v1/chat/completions    OpenAI chat completions, `stream` true or false
    POST /v1/completions         OpenAI (legacy) completions, `stream` true or false
    POST /v1/feedback            {"id": response id or row id, "feedback": any JSON value}
    POST /admin/reload           {"model": DIR}, only with ServeConfig.enable_reload_endpoint
"""

from __future__ import annotations

import hmac
import json
import logging
import select
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tao_engine.serve.errors import AUTHENTICATION, NOT_FOUND, SERVER_ERROR, APIError, bad_request
from tao_engine.serve.generation import serve_generation
from tao_engine.serve.server import InferenceServer

log = logging.getLogger(__name__)
MAX_JSON_DEPTH = 64  # far beyond any OpenAI request (messages -> content parts -> text is 4); deeper is refused


def _not_json(constant: str) -> Any:
    # Python's parser takes NaN and Infinity; JSON (and every later step: sampling values, the table) does not.
    raise json.JSONDecodeError(f"{constant} is not a JSON value", constant, 0)


def _too_deep_error() -> APIError:
    return bad_request(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep", code="invalid_json")


def _check_json_values(value: Any) -> None:
    """400 for a body nested past MAX_JSON_DEPTH or holding a string that is not Unicode text (a lone surrogate
    from a \\ud800 escape, which nothing downstream can encode). Iterative: a deep body must not recurse here."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise bad_request("the JSON body holds a string with a lone surrogate escape (e.g. \\ud800): not "
                                  "Unicode text", code="invalid_json") from None
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep_error()
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a connection idle in keep-alive must not hold up shutdown
    allow_reuse_address = True
    request_queue_size = 256  # listen backlog: socketserver's 5 refuses a burst of clients connecting at once

    def __init__(self, app: InferenceServer) -> None:
        self.app = app
        super().__init__((app.config.host, app.config.port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client resetting its keep-alive connection is routine, not a traceback on stderr.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


def make_http_server(app: InferenceServer) -> ThreadingHTTPServer:
    return _HTTPServer(app)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tao-engine"
    server: _HTTPServer

    def setup(self) -> None:
        self.timeout = self.server.app.config.idle_timeout_s
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        log.debug("%s - %s", self.address_string(), format % args)

    # ---- routing --------------------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(self._post)

    def _dispatch(self, route: Any) -> None:
        self._body_read = False
        self._streaming = False
        try:
            route(self.path.split("?", 1)[0])
        except APIError as exc:
            self._send_error(exc)
        except (ConnectionError, TimeoutError):  # the client went away (or stalled) while we answered
            self.close_connection = True
        except Exception as exc:  # a bug: answer 500, keep the server up
            log.exception("unhandled error for %s %s", self.command, self.path)
            self._send_error(APIError(500, f"internal error: {type(exc).__name__}: {exc}", SERVER_ERROR))

    def _get(self, path: str) -> None:
        app = self.server.app
        if path == "/health":
            self.send_json(200, {"status": "ok", "model": app.served_model_name, "model_version": app.model_version})
            return
        if path == "/v1/models" or path.startswith("/v1/models/"):
            self._authorize()
            card = {"id": app.served_model_name, "object": "model", "created": app.created, "owned_by": "tao-engine"}
            if path == "/v1/models":
                self.send_json(200, {"object": "list", "data": [card]})
            elif path[len("/v1/models/"):] == app.served_model_name:
                self.send_json(200, card)
            else:
                raise APIError(404, f"The model `{path[len('/v1/models/'):]}` does not exist", param="model",
                               code="model_not_found")
            return
        self._not_found(path, {"/v1/chat/completions", "/v1/completions", "/v1/feedback", "/admin/reload"})

    def _post(self, path: str) -> None:
        app = self.server.app
        routes = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}
        if path in routes:
            self._authorize()
            serve_generation(app, routes[path], self._json_body(), self)
        elif path == "/v1/feedback":
            self._authorize()
            self._feedback(self._json_body())
        elif path == "/admin/reload" and app.config.enable_reload_endpoint:
            self._authorize()
            self._reload(self._json_body())
        else:
            self._not_found(path, {"/health", "/v1/models"})

    def _not_found(self, path: str, other_method: set[str]) -> None:
        if path in other_method:
            raise APIError(405, f"{self.command} is not allowed on {path}", code="method_not_allowed")
        raise APIError(404, f"Invalid URL ({self.command} {path})", NOT_FOUND, code="unknown_url")

    def _authorize(self) -> None:
        key = self.server.app.config.api_key
        if key is None:
            return
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise APIError(401, "You didn't provide an API key: send `Authorization: Bearer <key>`", AUTHENTICATION,
                           code="invalid_api_key")
        if not hmac.compare_digest(header[len("Bearer "):].strip().encode(), key.encode()):
            raise APIError(401, "Incorrect API key provided", AUTHENTICATION, code="invalid_api_key")

    # ---- bodies ---------------------------------------------------------------------------------------------------

    def _json_body(self) -> Any:
        limit = self.server.app.config.max_request_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise APIError(411, "chunked request bodies are not supported: send Content-Length", code="length_required")
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            raise APIError(411, "the request needs a Content-Length header and a JSON body", code="length_required")
        if len(self.headers.get_all("Content-Length") or ()) > 1:
            raise bad_request("the request has more than one Content-Length header")
        if not raw_length.strip().isdigit():  # int() would take "-5" (read to EOF), " 5", "1_0"
            raise bad_request(f"Content-Length must be a non-negative integer, got {raw_length!r}")
        length = int(raw_length)
        if length > limit:
            raise APIError(413, f"the request body has {length} bytes; this server accepts at most {limit}",
                           code="request_too_large")
        try:
            data = self.rfile.read(length)
        except TimeoutError:  # the client promised more than it sends: answer, rather than drop the connection
            raise APIError(408, f"the request body did not arrive: Content-Length says {length} bytes and none came "
                           f"for {self.server.app.config.idle_timeout_s}s", code="request_timeout") from None
        self._body_read = True
        if len(data) != length:
            raise bad_request("the request body ended before Content-Length bytes arrived")
        try:
            body = json.loads(data, parse_constant=_not_json)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise bad_request(f"We could not parse the JSON body of your request ({exc}). The body must be a JSON "
                              "object; set Content-Type: application/json.", code="invalid_json") from None
        except RecursionError:  # nested past the parser's own recursion limit
            raise _too_deep_error() from None
        _check_json_values(body)
        return body

    def _feedback(self, body: Any) -> None:
        app = self.server.app
        if not isinstance(body, dict) or set(body) != {"id", "feedback"}:
            raise bad_request("feedback takes exactly {'id': <response id or row id>, 'feedback': <any JSON value>}")
        key, value = body["id"], body["feedback"]
        if isinstance(key, bool) or not isinstance(key, (int, str)) or value is None:
            raise bad_request("feedback: id must be a response id (str) or a row id (int), feedback not null", "id")
        if isinstance(key, int) and not 0 < key < 2**63:  # row ids are positive SQLite integers
            raise APIError(404, f"no logged request has id {key!r}", NOT_FOUND, "id", "not_found")
        if app.writer is None:
            raise bad_request("this server keeps no inference table: start it with a table to record feedback")
        if not app.writer.set_feedback(key, value).result():
            raise APIError(404, f"no logged request has id {key!r}", NOT_FOUND, "id", "not_found")
        self.send_json(200, {"id": key, "object": "feedback", "updated": True})

    def _reload(self, body: Any) -> None:
        if not isinstance(body, dict) or set(body) != {"model"} or not isinstance(body["model"], str):
            raise bad_request("reload takes {'model': <model directory>}", "model")
        try:
            version = self.server.app.reload(body["model"])
        except (ValueError, FileNotFoundError) as exc:
            raise bad_request(f"reload failed: {exc}", "model") from None
        self.send_json(200, {"model": body["model"], "model_version": version})

    # ---- the Transport of generation.py --------------------------------------------------------------------------

    def send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if not self._body_read and self.command == "POST":
            self.close_connection = True  # the body (if any) is still unread on the socket
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, exc: APIError) -> None:
        if self._streaming:
            self.close_connection = True  # a stream cut short: its framing cannot be trusted for another request
            return
        try:
            self.send_json(exc.status, exc.body())
        except OSError:
            self.close_connection = True

    def start_events(self) -> None:
        self._streaming = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_event(self, data: dict[str, Any] | str) -> None:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        payload = f"data: {text}\n\n".encode()
        try:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(payload), payload))
        except OSError:
            self.close_connection = True
            raise

    def end_events(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def client_gone(self) -> bool:
        """True when the peer closed its end (readable with nothing to read) or the socket broke."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True
