"""`InferenceService`: what the HTTP handlers call (parse and check a request, queue it on the engine loop, record
its row, reload weights), without the HTTP server itself, which `InferenceServer` (server.py) starts around it.

`reload` is the hook a flywheel calls after it writes a checkpoint (also `POST /admin/reload` when
`ServeConfig.enable_reload_endpoint` is on).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.engine.prompts import encode_prompt
from tao_engine.serve.config import ServeConfig
from tao_engine.serve.engine_loop import EngineLoop, Overloaded, RequestStream, Update
from tao_engine.serve.errors import OVERLOADED, SERVER_ERROR, APIError, bad_request
from tao_engine.serve.inference_table import InferenceRecord
from tao_engine.serve.openai_params import (
    GenerationRequest,
    build_sampling,
    check_model,
    parse_chat,
    parse_completion,
    resolve_max_tokens,
)
from tao_engine.serve.openai_responses import Choices
from tao_engine.serve.table_writer import TableWriter
from tao_engine.serve.weights_reload import copy_weights_, read_replacement_weights

IN_PROCESS_SOURCE = "<in-process module>"


@dataclass(frozen=True)
class PreparedRequest:
    request: GenerationRequest
    request_id: str  # the response id, also the table's request_id
    created: int  # unix seconds, the response's `created`
    arrival: float  # unix time, the row's created_at
    prompt_token_ids: list[int]
    params: SamplingParams


class InferenceService:
    def __init__(self, engine: Engine, config: ServeConfig | None = None, table_path: str | Path | None = None,
                 model_source: str | Path = IN_PROCESS_SOURCE) -> None:
        self.engine = engine
        self.config = config or ServeConfig()
        source = str(model_source)
        self.served_model_name = self.config.served_model_name or (
            Path(source).name if source != IN_PROCESS_SOURCE else "tao-engine")
        self.tokenizer = engine.tokenizer
        self.max_context = engine.scheduler.max_seq_len  # min(max_model_len, what the whole KV cache holds)
        self.vocab_size = engine.model.config.vocab_size
        self.created = int(time.time())
        self.writer = TableWriter(table_path) if table_path is not None else None
        version = self.writer.register_model_version(source).result() if self.writer is not None else 1
        self.loop = EngineLoop(engine, version, self.config.max_queued_requests)
        self._reload_lock = threading.Lock()
        self._active_lock = threading.Lock()
        self._active = 0  # handlers between submit and their last write

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, config: ServeConfig | None = None,
                       table_path: str | Path | None = None,
                       engine_config: EngineConfig | None = None) -> Self:
        return cls(Engine(model_dir, engine_config), config, table_path, model_source=Path(model_dir).resolve())

    @property
    def model_version(self) -> int:
        return self.loop.model_version

    def reload(self, model_dir: str | Path) -> int:
        """Swap the weights of `model_dir` into the served module, between steps; returns the new model version.

        The checkpoint is read and checked while the engine keeps serving; then requests already running finish on
        the old weights, requests arriving meanwhile wait, the weights are copied in place, and the waiting requests
        run on the new ones. Nothing is dropped. Reloads run one at a time."""
        with self._reload_lock:
            state = read_replacement_weights(self.engine.model, model_dir)
            if self.writer is not None:
                version = self.writer.register_model_version(str(Path(model_dir).resolve())).result()
            else:
                version = self.loop.model_version + 1
            return self.loop.swap_weights(lambda engine: copy_weights_(engine.model, state), version).result()

    # ---- requests (called by the HTTP handlers) -------------------------------------------------------------------

    def prepare(self, kind: str, body: Any) -> PreparedRequest:
        """Parse and check a request, tokenize its prompt and fix its sampling parameters; APIError when invalid."""
        request = parse_chat(body, self.config) if kind == "chat" else parse_completion(body, self.config)
        check_model(request, self.served_model_name)
        param = "messages" if kind == "chat" else "prompt"
        if self.tokenizer is None and not (kind == "completion" and isinstance(request.prompt, list)):
            raise bad_request("this server has no tokenizer: send `prompt` as token ids to /v1/completions", param)
        try:
            _, ids = encode_prompt(request.prompt, self.tokenizer)
        except ValueError as exc:  # the chat template refused the conversation, ...
            raise bad_request(f"{param}: {exc}", param) from None
        if not ids:
            raise bad_request(f"{param} is empty: it encodes to no tokens", param)
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise bad_request(f"prompt holds token ids outside [0, {self.vocab_size}): {bad[:5]}", param,
                              "invalid_value")
        max_tokens = resolve_max_tokens(request, len(ids), self.max_context, self.config)
        params = build_sampling(request, max_tokens)
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        now = time.time()
        return PreparedRequest(request, f"{prefix}-{uuid.uuid4().hex}", int(now), now, ids, params)

    def submit(self, prepared: PreparedRequest, deliver: Callable[[Update], None]) -> RequestStream:
        """Queue the request for the engine; `deliver` gets each of its updates (in the engine thread)."""
        try:
            return self.loop.submit(prepared.request_id, prepared.prompt_token_ids, prepared.params, deliver)
        except Overloaded as exc:
            raise APIError(503, f"the server is overloaded: {exc}", OVERLOADED, code="overloaded") from None
        except RuntimeError as exc:
            raise APIError(503, f"the server is not serving: {exc}", SERVER_ERROR, code="unavailable") from None

    def record(self, prepared: PreparedRequest, choices: Choices, model_version: int, prompt_tokens: int,
               latency_s: float) -> Future | None:
        """Queue the request's row for the table; the Future completes once it is committed (the handler waits for it
        before the response goes out). None without a table."""
        if self.writer is None:
            return None
        request = prepared.request
        row = InferenceRecord(
            request_id=prepared.request_id, created_at=prepared.arrival, model_version=model_version,
            kind=request.kind, prompt=request.prompt, sampling=asdict(prepared.params),
            outputs=list(choices.texts), finish_reasons=[r or "abort" for r in choices.finish_reasons],
            prompt_tokens=prompt_tokens, completion_tokens=choices.completion_tokens, latency_s=latency_s,
            user=request.user,
        )
        return self.writer.insert(row)

    @contextmanager
    def active(self) -> Iterator[None]:
        with self._active_lock:
            self._active += 1
        try:
            yield
        finally:
            with self._active_lock:
                self._active -= 1
