"""`TableWriter`: the one thread that writes the inference table while the server runs.

HTTP handler threads hand it records and wait on the returned future; the future resolves only after COMMIT, so a
handler that sends its response after `insert(...).result()` never acknowledges a row a crash could lose. Inserts
that queue up while a commit runs go into the next transaction together (group commit): with many concurrent
clients one fsync covers many rows.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tao_engine.serve.inference_table import InferenceRecord, InferenceTable

log = logging.getLogger(__name__)

MAX_GROUP = 256  # inserts per transaction


@dataclass
class _Job:
    future: Future
    record: InferenceRecord | None = None  # an insert
    call: Callable[[InferenceTable], Any] | None = None  # anything else, run alone in order


class TableWriter:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()  # orders `close` against submissions
        opened: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(opened,), name="tao-table-writer", daemon=True)
        self._thread.start()
        opened.result()  # the table opens (and its schema is checked) in the writer thread: raise errors here

    def insert(self, record: InferenceRecord) -> Future:
        """Future of the new row id, resolved once the row is committed."""
        return self._submit(_Job(Future(), record=record))

    def call(self, fn: Callable[[InferenceTable], Any]) -> Future:
        """Run `fn(table)` in the writer thread (feedback, model versions, queries); future of its result."""
        return self._submit(_Job(Future(), call=fn))

    def set_feedback(self, key: int | str, feedback: Any) -> Future:
        return self.call(lambda table: table.set_feedback(key, feedback))

    def register_model_version(self, source: str) -> Future:
        return self.call(lambda table: table.register_model_version(source))

    def _submit(self, job: _Job) -> Future:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"TableWriter({self.path}) is closed")
            self._jobs.put(job)
        return job.future

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish every queued job, then close the table."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._jobs.put(None)
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---- the writer thread ----------------------------------------------------------------------------------------

    def _run(self, opened: Future) -> None:
        try:
            table = InferenceTable(self.path)
        except BaseException as exc:
            opened.set_exception(exc)
            return
        opened.set_result(None)
        try:
            pending: _Job | None = None
            while True:
                job = pending if pending is not None else self._jobs.get()
                pending = None
                if job is None:
                    break
                if job.call is not None:
                    _resolve(job.future, job.call, table)
                    continue
                group = [job]
                while len(group) < MAX_GROUP:  # take the inserts already waiting; stop at anything else
                    try:
                        nxt = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None or nxt.record is None:
                        pending = nxt
                        break
                    group.append(nxt)
                self._insert_group(table, group)
        finally:
            table.close()
            _fail_all(self._jobs, RuntimeError(f"TableWriter({self.path}) stopped"))

    @staticmethod
    def _insert_group(table: InferenceTable, group: list[_Job]) -> None:
        try:
            ids = table.insert_many([j.record for j in group])  # type: ignore[misc]
        except Exception as exc:
            if len(group) == 1:
                log.warning("inference table write failed: %s: %s", type(exc).__name__, exc)
                group[0].future.set_exception(exc)
                return
            # One bad record (a duplicate request id...) must not fail the others: retry one by one.
            for j in group:
                _resolve(j.future, lambda t, r=j.record: t.insert(r), table)
            return
        for j, row_id in zip(group, ids, strict=True):
            j.future.set_result(row_id)


def _resolve(future: Future, fn: Callable[[InferenceTable], Any], table: InferenceTable) -> None:
    try:
        result = fn(table)
    except BaseException as exc:
        log.warning("inference table write failed: %s: %s", type(exc).__name__, exc)
        future.set_exception(exc)
    else:
        future.set_result(result)


def _fail_all(jobs: queue.SimpleQueue, exc: Exception) -> None:
    while True:
        try:
            job = jobs.get_nowait()
        except queue.Empty:
            return
        if job is not None:
            job.future.set_exception(exc)
