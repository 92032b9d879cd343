"""`InferenceServer`: the inference service (service.py: the engine loop and the inference table writer) with the
HTTP server in front of it (FastAPI on uvicorn, the `serve` extra: asgi_app.py, http_server.py), started and
stopped together.

    server = InferenceServer.from_model_dir("model/", ServeConfig(port=0), table_path="infer.sqlite").start()
    ... server.url ...
    server.reload("round-1/model")  # new weights, same module; later rows record the new model version
    server.stop()
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tao_engine.engine import Engine
from tao_engine.serve.config import ServeConfig
from tao_engine.serve.service import IN_PROCESS_SOURCE, InferenceService

SHUTDOWN_TIMEOUT_S = 30.0  # stop(): requests still answering after the drain are cut off past this


class InferenceServer(InferenceService):
    def __init__(self, engine: Engine, config: ServeConfig | None = None, table_path: str | Path | None = None,
                 model_source: str | Path = IN_PROCESS_SOURCE) -> None:
        super().__init__(engine, config, table_path, model_source)
        self._http: Any = None  # HTTPServerThread once started

    # ---- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> InferenceServer:
        from tao_engine.serve.asgi_app import create_app
        from tao_engine.serve.http_server import HTTPServerThread

        # Binds first: a taken port fails before the engine loop starts.
        http = HTTPServerThread(create_app(self), self.config.host, self.config.port, self.config.idle_timeout_s,
                                shutdown_timeout_s=SHUTDOWN_TIMEOUT_S)
        try:
            self.loop.start()
            http.start()
        except BaseException:
            http.close()
            self.loop.stop()
            raise
        self._http = http
        return self

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop accepting connections, let running requests finish (up to `drain_timeout_s`) and reach the table,
        then stop the engine loop and close the table."""
        if self._http is not None:
            self._http.begin_shutdown()
        deadline = time.monotonic() + drain_timeout_s
        while self.loop.outstanding and time.monotonic() < deadline:
            time.sleep(0.01)
        self.loop.stop()
        while self._active and time.monotonic() < deadline + 5.0:  # handlers writing their rows
            time.sleep(0.01)
        if self._http is not None:
            self._http.join(SHUTDOWN_TIMEOUT_S)
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> InferenceServer:
        return self if self._http is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
