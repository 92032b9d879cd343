"""Uvicorn running the ASGI app on an event loop in a thread of its own, so that `InferenceServer.start()` returns
(tests, the flywheel and `tao-engine serve` keep the calling thread). The socket is bound here, before anything else
starts, so a taken port fails at once and port 0 gives a real one.

HTTP/1.1 comes from h11 (uvicorn's h11 protocol, which `half_close_protocol` extends): the malformed-request
guarantees (a 4xx for a negative or doubled Content-Length, a lying one, bad framing) are tested against its parser.
One event loop serves every connection: an idle or slow client holds a socket, not a thread.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

STARTUP_TIMEOUT_S = 30.0
BACKLOG = 256  # a burst of clients connecting at once is queued, not refused


class HTTPServerThread:
    def __init__(self, app: Any, host: str, port: int, idle_timeout_s: float, shutdown_timeout_s: float) -> None:
        import uvicorn

        self.sock = socket.create_server((host, port), backlog=BACKLOG)
        config = uvicorn.Config(app, http=half_close_protocol(), lifespan="off", log_level="error",
                                access_log=False, timeout_keep_alive=idle_timeout_s,
                                timeout_graceful_shutdown=shutdown_timeout_s)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="tao-http",
                                        daemon=True)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("serve: the HTTP server did not start (see the log above)")
            time.sleep(0.01)

    def begin_shutdown(self) -> None:
        """Stop accepting connections; requests in flight go on until they answer."""
        self.server.should_exit = True

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.close()

    def close(self) -> None:
        self.sock.close()


PEER_EOF = "tao_engine.peer_eof"  # scope["extensions"] key: an asyncio.Event set when the client shuts its side


def half_close_protocol() -> type:
    """uvicorn's h11 protocol, telling a client that shut its sending side (a half-close) from one that is gone.

    uvicorn closes a connection at the client's EOF. Then a client whose body ends before its Content-Length promised
    gets no status at all, nor does one that half-closes after a whole request and waits to read the answer. Here a
    body cut short goes to h11, whose protocol error uvicorn answers with 400; after a whole request the socket stays
    open and the request's `scope["extensions"][PEER_EOF]` event is set: the handler aborts a generation for a client
    that may be gone, and an answer it already has (an error) still goes out."""
    import asyncio

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HalfCloseH11Protocol(H11Protocol):
        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not None and self.cycle is not cycle:  # a new request: before its app task runs
                self.cycle.scope.setdefault("extensions", {})[PEER_EOF] = asyncio.Event()

        def eof_received(self) -> bool | None:
            cycle = self.cycle
            if cycle is None or cycle.response_complete or cycle.response_started:
                return None  # close: between requests, or the answer is on its way already
            if self.conn.their_state is h11.SEND_BODY:
                self.conn.receive_data(b"")
                self.handle_events()  # the short body is a RemoteProtocolError: uvicorn's 400, then close
                return True
            cycle.scope["extensions"][PEER_EOF].set()
            return True  # keep the socket open for the answer; the connection closes after it

    return HalfCloseH11Protocol
