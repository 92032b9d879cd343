"""A synchronous scorer with a time limit runs in a worker process, which is killed when a call runs past the limit.

Why a process and not a thread: Python cannot stop a thread. A sync scorer that never returns would keep its thread
(and its CPU, and whatever it holds) for the rest of the run, and a later call would run beside it on the same
object. A process can be killed, so a timed-out call costs nothing afterwards. The price is that the scorer and each
call's inputs and outputs are pickled, and the worker starts once (and again after each kill; the scorer's counters
start over then). So a scorer given `timeout_s` must pickle, must be importable by a fresh interpreter (not defined
in `__main__`), and must not hold a model: a scorer that runs a torch module (judges, reward models,
self-certainty) would be copied into the worker, so `timeout_s` on it is refused (they are bounded by their
max_tokens / batch budgets instead). Async scorers keep running in this process: `asyncio.wait_for` cancels them.

The worker is `python -m tao_engine.scoring.scorer_process`, not `multiprocessing`: a spawned multiprocessing child
re-runs the parent's `__main__` script, a forked one inherits torch's threads. It reads length-prefixed pickle
frames on stdin and answers on a private copy of stdout (the scorer's own prints go to stderr).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import io
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

STARTUP_TIMEOUT_S = 120.0  # a fresh interpreter importing the scorer's modules (torch among them) on a busy machine
_HEADER = struct.Struct(">Q")


class ScorerTimeout(TimeoutError):
    """A scorer call ran past its `timeout_s` (the worker was killed, or the coroutine cancelled)."""


class NotRunnableInWorker(ValueError):
    """The scorer cannot run in a worker process, so a time limit on it cannot be enforced."""


def is_async_scorer(scorer: object) -> bool:
    """Whether the scorer's scoring method is a coroutine function (a FunctionScorer: its wrapped function)."""
    method = getattr(scorer, "score_groups", None) or getattr(scorer, "score", None)
    return inspect.iscoroutinefunction(method) or inspect.iscoroutinefunction(getattr(scorer, "fn", None))


def resolve(value: Any, timeout_s: float | None = None) -> Any:
    """Await `value` when it is awaitable (asyncio.run, or a worker thread's loop when a loop already runs here)."""
    if not inspect.isawaitable(value):
        return value

    async def _wait() -> Any:
        if timeout_s is None:
            return await value
        try:
            return await asyncio.wait_for(value, timeout_s)
        except TimeoutError:
            raise ScorerTimeout(f"the scorer's coroutine ran past timeout_s={timeout_s}s and was cancelled") from None

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_wait())
    # Called from inside a running loop (a notebook, an async server): that loop cannot be re-entered, so the
    # coroutine gets its own loop on a worker thread while this call blocks.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _wait()).result()


class _CheckingPickler(pickle.Pickler):
    """Pickles like the default, but refuses what a fresh worker could not load or should not copy."""

    def __init__(self, file: io.BytesIO, what: str) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.what = what
        self.modules: set[str] = set()  # the modules of the classes and functions pickled by reference

    def reducer_override(self, obj: Any) -> Any:
        owner = obj if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__") else type(obj)
        module = getattr(owner, "__module__", None)
        if isinstance(module, str):
            self.modules.add(module)
        if getattr(owner, "__module__", None) == "__main__":
            raise NotRunnableInWorker(
                f"{self.what}: {getattr(owner, '__qualname__', owner)!r} is defined in __main__ (the script that was "
                "run), which a worker process cannot import; move it into an importable module, or drop timeout_s")
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, (torch.nn.Module, torch.Tensor)):
            raise NotRunnableInWorker(
                f"{self.what}: it holds a {type(obj).__name__} (a model or tensors), which a worker process would "
                "copy; timeout_s applies to rule and verifier scorers, drop it here (model scorers are bounded by "
                "their token budgets)")
        return NotImplemented


def pickle_for_worker(obj: Any, what: str) -> tuple[bytes, list[str]]:
    """(`obj` pickled for a worker, the folders the worker must search besides this process's sys.path), or
    NotRunnableInWorker saying why it cannot be."""
    buffer = io.BytesIO()
    pickler = _CheckingPickler(buffer, what)
    try:
        pickler.dump(obj)
    except NotRunnableInWorker:
        raise
    except Exception as exc:  # noqa: BLE001 - pickling raises many types (TypeError, AttributeError, PicklingError)
        raise NotRunnableInWorker(f"{what}: it cannot be pickled for a worker process ({type(exc).__name__}: {exc}); "
                                  "drop timeout_s, or make the scorer picklable") from None
    return buffer.getvalue(), _import_roots(pickler.modules)


def _import_roots(modules: set[str]) -> list[str]:
    """The folders that hold the top-level packages of `modules` which sys.path cannot find: a package this process
    imported by its location rather than through sys.path (pytest's importlib mode imports `tests` so)."""
    import importlib.machinery

    roots: list[str] = []
    for top in sorted({name.partition(".")[0] for name in modules}):
        module = sys.modules.get(top)
        if module is None or importlib.machinery.PathFinder.find_spec(top) is not None:
            continue
        locations = list(getattr(module, "__path__", None) or [])  # a package: its folder(s)
        origin = locations[0] if locations else getattr(module, "__file__", None)  # a module: its file
        folder = os.path.dirname(origin) if origin else ""
        if folder and folder not in roots:
            roots.append(folder)
    return roots


def _write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(_HEADER.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    chunks, remaining = [], size
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ScorerTimeout
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float | None) -> bytes:
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size, deadline))
    return _read_exactly(fd, size, deadline)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


class ScorerProcess:
    """Runs one scorer's methods in a worker process, each call bounded by `timeout_s` (see the module docstring)."""

    def __init__(self, scorer: object, timeout_s: float, what: str) -> None:
        self.what = what
        self.timeout_s = timeout_s
        self._payload, self._extra_path = pickle_for_worker(scorer, what)  # refused here, when the config is built
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        self.kills = 0

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`scorer.<method>(*args, **kwargs)` in the worker; ScorerTimeout past the limit (the worker is killed)."""
        proc = self._started()
        try:
            request = pickle.dumps((method, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"{self.what}: the call's inputs cannot be pickled for the worker: {exc}") from None
        try:
            _write_frame(proc.stdin.fileno(), request)
            status, value = pickle.loads(_read_frame(proc.stdout.fileno(), time.monotonic() + self.timeout_s))
        except ScorerTimeout:
            self.close()
            self.kills += 1
            raise ScorerTimeout(f"{self.what}: the call ran past timeout_s={self.timeout_s}s; the worker was killed "
                                "(it restarts on the next call)") from None
        except (EOFError, OSError) as exc:
            code = proc.poll()
            self.close()
            raise RuntimeError(f"{self.what}: the worker process died during the call (exit code {code}): "
                               f"{type(exc).__name__}") from None
        if status == "error":
            raise RuntimeError(value)
        return value

    def _started(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self.close()
        # The worker imports what the parent can: the parent's sys.path (the working directory for its '' entry), then
        # the folders of the scorer's packages that were imported from outside it (last: they never shadow the rest).
        path = os.pathsep.join([p or os.getcwd() for p in sys.path] + self._extra_path)
        env = {**os.environ, "PYTHONPATH": path}
        proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=env)
        self._proc = proc
        self._finalizer = weakref.finalize(self, _kill, proc)  # also at interpreter exit
        try:
            _write_frame(proc.stdin.fileno(), self._payload)
            status, value = pickle.loads(_read_frame(proc.stdout.fileno(), time.monotonic() + STARTUP_TIMEOUT_S))
        except (ScorerTimeout, EOFError, OSError) as exc:
            self.close()
            raise RuntimeError(f"{self.what}: the worker process did not start ({type(exc).__name__})") from None
        if status == "error":
            self.close()
            raise NotRunnableInWorker(f"{self.what}: the worker process cannot load the scorer: {value}")
        return proc

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # kills and reaps the worker once
        self._proc = self._finalizer = None


def process_proxy(scorer: Any, timeout_s: float, what: str) -> Any:
    """An object with the scorer's `name`, its scoring method and `metrics` (if it has one), each run in a
    `ScorerProcess`; `close()` stops the worker."""
    process = ScorerProcess(scorer, timeout_s, what)
    proxy = _Proxy(scorer.name, process)
    method = "score_groups" if callable(getattr(scorer, "score_groups", None)) else "score"
    setattr(proxy, method, _bound(process, method))
    if callable(getattr(scorer, "metrics", None)):
        proxy.metrics = _bound(process, "metrics")
    return proxy


class _Proxy:
    def __init__(self, name: str, process: ScorerProcess) -> None:
        self.name = name
        self.process = process

    def close(self) -> None:
        self.process.close()


def _bound(process: ScorerProcess, method: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return process.call(method, *args, **kwargs)

    return call


# ---- the worker ---------------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # Linux: SIGKILL this worker when the parent dies, even mid-call (a scorer stuck in a loop never reads stdin's EOF).
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _answer(fd: int, status: str, value: Any) -> None:
    try:
        payload = pickle.dumps((status, value), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - a result or exception that does not pickle
        payload = pickle.dumps(("error", f"the scorer's answer cannot be pickled: {type(exc).__name__}: {exc}"))
    _write_frame(fd, payload)


def main() -> None:
    _die_with_parent()
    reply = os.dup(1)  # the protocol's channel; the scorer's own prints go to stderr instead of corrupting it
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer.fileno()
    try:
        scorer = pickle.loads(_read_frame(requests, None))
    except Exception as exc:  # noqa: BLE001
        _answer(reply, "error", f"{type(exc).__name__}: {exc}")
        return
    _answer(reply, "ok", None)
    while True:
        try:
            method, args, kwargs = pickle.loads(_read_frame(requests, None))
        except EOFError:
            return  # the parent closed the pipe
        try:
            _answer(reply, "ok", resolve(getattr(scorer, method)(*args, **kwargs)))
        except Exception as exc:  # noqa: BLE001 - the parent attributes it to the scorer and the prompt
            _answer(reply, "error", f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
