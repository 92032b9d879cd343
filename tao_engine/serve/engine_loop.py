"""`EngineLoop`: the one thread that owns the `Engine` while the server runs.

The engine is not thread-safe, so nothing else touches it. The HTTP layer `submit`s a request with a `deliver`
callback that the engine thread calls with each `Update` (the ASGI handlers hand it to their event loop); aborts and
weight swaps arrive as commands on one queue, read between steps.
While any request is unfinished the thread runs steps back to back, so requests that arrive meanwhile join the
running batch at the next step (continuous batching); when nothing runs it sleeps on the command queue.

A weight swap waits for the requests already running to finish (new ones are held meanwhile), swaps, then admits
the held ones: every request runs from first to last token on one model version, and none is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from tao_engine.engine import Engine, RequestOutput, SamplingParams

log = logging.getLogger(__name__)

ERROR_INVALID = "invalid"  # the engine refused the request (too long for the KV cache, n > max_num_seqs...)
ERROR_INTERNAL = "internal"  # a step failed, or the server stopped


class Overloaded(RuntimeError):
    """Too many unfinished requests; the caller should answer 503."""


@dataclass(frozen=True)
class SampleDelta:
    index: int  # which choice
    text: str  # text new since the previous update (never cut later by a stop string)
    token_ids: tuple[int, ...]  # tokens new since the previous update
    logprobs: tuple[float, ...]  # their log-probs under the model (temperature 1, no filtering)
    finish_reason: str | None  # set once, in the update where the choice ends


@dataclass(frozen=True)
class Update:
    deltas: tuple[SampleDelta, ...]
    finished: bool
    model_version: int  # the weights this request runs on
    prompt_tokens: int
    error: str | None = None
    error_kind: str | None = None  # ERROR_INVALID | ERROR_INTERNAL


@dataclass
class RequestStream:
    """One submitted request: the engine thread hands each of its updates to `deliver` (which must not block: it
    runs between engine steps)."""

    request_id: str
    deliver: Callable[[Update], None] = field(repr=False)


@dataclass
class _Submission:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    stream: RequestStream


@dataclass
class _Tracked:
    submission: _Submission
    output: RequestOutput
    model_version: int
    sent_text: list[int]
    sent_tokens: list[int]
    sent_finish: list[bool]


@dataclass
class _Swap:
    apply: Callable[[Engine], None]
    version: int
    future: Future


class EngineLoop:
    def __init__(self, engine: Engine, model_version: int, max_queued_requests: int = 1024) -> None:
        self.engine = engine
        self._version = model_version
        self._max_queued = max_queued_requests
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _outstanding and _stopped
        self._outstanding = 0  # submitted, final update not yet sent
        self._stopped = False
        # Engine-thread state
        self._tracked: dict[str, _Tracked] = {}
        self._held: list[_Submission] = []  # arrived while a swap waits for the running requests
        self._swaps: list[_Swap] = []
        self._thread = threading.Thread(target=self._run, name="tao-engine-loop", daemon=True)

    def start(self) -> EngineLoop:
        self._thread.start()
        return self

    @property
    def model_version(self) -> int:
        return self._version

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def outstanding(self) -> int:
        with self._lock:
            return self._outstanding

    # ---- called from handler threads ------------------------------------------------------------------------------

    def submit(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams,
               deliver: Callable[[Update], None]) -> RequestStream:
        with self._lock:
            if self._stopped or not self._thread.is_alive():
                raise RuntimeError("the engine loop is not running")
            if self._outstanding >= self._max_queued:
                raise Overloaded(f"{self._outstanding} requests are waiting; try again later")
            self._outstanding += 1
            stream = RequestStream(request_id, deliver)
            # Put under the lock: once _shutdown has set _stopped and drained the queue, nothing lands unanswered.
            self._commands.put(("add", _Submission(request_id, prompt_token_ids, params, stream)))
        return stream

    def abort(self, request_id: str) -> None:
        self._commands.put(("abort", request_id))

    def swap_weights(self, apply: Callable[[Engine], None], version: int) -> Future:
        """Run `apply(engine)` in the engine thread once no request runs, then call engine.weights_updated() and make
        `version` current. Future of `version`."""
        future: Future = Future()
        with self._lock:
            if self._stopped or not self._thread.is_alive():
                raise RuntimeError("the engine loop is not running")
            self._commands.put(("swap", _Swap(apply, version, future)))
        return future

    def stop(self, timeout: float | None = 30.0) -> None:
        """Abort what runs, fail what waits, end the thread."""
        with self._lock:
            self._stopped = True
        self._commands.put(("stop", None))
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- the engine thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                if self._swaps and not self.engine.has_unfinished():
                    self._swap(self._swaps.pop(0))
                    continue
                if not self._read_commands(block=not self.engine.has_unfinished()):
                    break
                if self.engine.has_unfinished():
                    self._step()
        except BaseException:
            log.exception("the engine loop crashed; failing every request")
        finally:
            self._shutdown()

    def _read_commands(self, block: bool) -> bool:
        """Handle the waiting commands (wait for one when `block`); False on stop."""
        try:
            command = self._commands.get() if block else self._commands.get_nowait()
        except queue.Empty:
            return True
        while True:
            kind, payload = command
            if kind == "stop":
                return False
            if kind == "add":
                if self._swaps:
                    self._held.append(payload)
                else:
                    self._add(payload)
            elif kind == "abort":
                self._abort(payload)
            elif kind == "swap":
                self._swaps.append(payload)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return True

    def _add(self, sub: _Submission) -> None:
        try:
            output = self.engine.add_request(sub.prompt_token_ids, sub.params, request_id=sub.request_id)
        except Exception as exc:  # a bad request the checks before did not catch: answer it, keep serving
            self._final(sub, f"{type(exc).__name__}: {exc}", ERROR_INVALID, prompt_tokens=len(sub.prompt_token_ids))
            return
        n = len(output.samples)
        tracked = _Tracked(sub, output, self._version, [0] * n, [0] * n, [False] * n)
        self._tracked[sub.request_id] = tracked
        if output.finished:  # refused at add: the prompt can never run
            self._publish(tracked, ERROR_INVALID)

    def _abort(self, request_id: str) -> None:
        tracked = self._tracked.get(request_id)
        if tracked is not None:
            self.engine.abort(request_id)
            self._publish(tracked, ERROR_INTERNAL)
            return
        for sub in self._held:
            if sub.request_id == request_id:
                self._held.remove(sub)
                self._final(sub, "aborted before it started", ERROR_INTERNAL, len(sub.prompt_token_ids))
                return

    def _step(self) -> None:
        try:
            changed = {o.request_id for o in self.engine.step()}
        except Exception:
            # The engine ended the failed step's requests with the error and keeps serving the rest.
            log.exception("an engine step failed")
            changed = set(self._tracked)
        for request_id in changed:
            tracked = self._tracked.get(request_id)
            if tracked is not None:
                self._publish(tracked, ERROR_INTERNAL)

    def _publish(self, t: _Tracked, error_kind: str) -> None:
        out = t.output
        deltas = []
        for s in out.samples:
            i = s.index
            text = s.text[t.sent_text[i]:] if len(s.text) > t.sent_text[i] else ""
            start = t.sent_tokens[i]
            tokens, logprobs = tuple(s.token_ids[start:]), tuple(s.raw_logprobs[start:])
            finish = s.finish_reason if s.finish_reason is not None and not t.sent_finish[i] else None
            if text or tokens or finish:
                deltas.append(SampleDelta(i, text, tokens, logprobs, finish))
                t.sent_text[i] += len(text)
                t.sent_tokens[i] += len(tokens)
                t.sent_finish[i] = t.sent_finish[i] or finish is not None
        finished = out.finished
        if not deltas and not finished:
            return
        error = out.error
        update = Update(tuple(deltas), finished, t.model_version, len(out.prompt_token_ids), error,
                        error_kind if error is not None else None)
        t.submission.stream.deliver(update)
        if finished:
            del self._tracked[out.request_id]
            self._release()

    def _final(self, sub: _Submission, error: str, kind: str, prompt_tokens: int) -> None:
        sub.stream.deliver(Update((), True, self._version, prompt_tokens, error, kind))
        self._release()

    def _release(self) -> None:
        with self._lock:
            self._outstanding -= 1

    def _swap(self, swap: _Swap) -> None:
        try:
            swap.apply(self.engine)
            self.engine.weights_updated()  # the prefix cache holds KV of the old weights
        except BaseException as exc:
            log.exception("a weight swap failed; serving on with model version %d", self._version)
            swap.future.set_exception(exc)
        else:
            self._version = swap.version
            swap.future.set_result(swap.version)
        if not self._swaps:
            held, self._held = self._held, []
            for sub in held:
                self._add(sub)

    def _shutdown(self) -> None:
        for request_id in list(self._tracked):
            tracked = self._tracked[request_id]
            self.engine.abort(request_id)
            tracked.output.error = tracked.output.error or "the server is shutting down"
            self._publish(tracked, ERROR_INTERNAL)
        for sub in self._held:
            self._final(sub, "the server is shutting down", ERROR_INTERNAL, len(sub.prompt_token_ids))
        self._held = []
        with self._lock:
            self._stopped = True
        while True:  # nothing new can arrive now: fail what is still queued
            try:
                kind, payload = self._commands.get_nowait()
            except queue.Empty:
                break
            if kind == "add":
                self._final(payload, "the server is shutting down", ERROR_INTERNAL, len(payload.prompt_token_ids))
            elif kind == "swap":
                payload.future.set_exception(RuntimeError("the server stopped before the weight swap"))
        for swap in self._swaps:
            swap.future.set_exception(RuntimeError("the server stopped before the weight swap"))
