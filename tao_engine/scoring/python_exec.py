"""Run each candidate's Python (a program, or an expression) in a fresh isolated interpreter, never in process, and
reward a clean exit or the expected output.

Each run: `sys.executable -I -c CODE` in a new session, in an empty temporary directory, with a minimal environment,
stdin closed, and limits set by `resource.setrlimit` before exec: CPU seconds, address space, no core files, open
files, and output file size (stdout/stderr go to files capped at `max_output_bytes`, so a print loop cannot fill
this process's memory). A wall-clock timeout kills the whole process group. Runs go `concurrency` at a time on
asyncio (one thread: no fork from a thread pool).

Context (per item, optional): `expected_stdout` (a string compared after stripping trailing whitespace of every
line, or a predicate `f(stdout) -> bool | float`), `test_code` (appended to the program, e.g. asserts).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tao_engine.scoring.base import Scores
from tao_engine.scoring.extract import get_extractor

_EVAL_PROGRAM = "import sys\nprint(eval(sys.argv[1]))\n"  # the expression travels in argv: no quoting to get wrong


@dataclass(frozen=True)
class ExecResult:
    returncode: int | None  # None when killed by the timeout
    stdout: str
    stderr: str
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _set_limits(cpu_s: int, memory_bytes: int, max_output_bytes: int, max_open_files: int) -> None:
    """Runs in the child between fork and exec. Soft = hard, so the code cannot raise them back."""
    import resource

    for limit, value in ((resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_AS, memory_bytes),
                         (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, max_open_files),
                         (resource.RLIMIT_FSIZE, max_output_bytes)):
        resource.setrlimit(limit, (value, value))


def _normalize_output(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


@dataclass
class PythonExecScorer:
    """1.0 when the program exits 0 (and, where the context gives `expected_stdout`, prints it / satisfies it),
    else 0.0; a timeout, a crash, a limit hit or no code found all give 0.0."""

    name: ClassVar[str] = "python_exec"
    mode: str = "code"  # "code": a program; "expression": a Python expression, its value printed
    extract: str = "python_block"  # extractor name ("python_block", "code_block", "stripped", ...)
    time_limit_s: float = 5.0  # wall clock per run
    memory_mb: int = 512  # address-space limit
    max_output_bytes: int = 65536  # stdout and stderr are cut there (files, so a print loop cannot fill memory)
    max_open_files: int = 32  # RLIMIT_NOFILE of the run
    concurrency: int = 2  # runs at a time
    _counts: Counter = field(default_factory=Counter, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ("code", "expression"):
            raise ValueError(f"python_exec: mode must be 'code' or 'expression', got {self.mode!r}")
        if not self.time_limit_s > 0:
            raise ValueError(f"python_exec: time_limit_s must be > 0, got {self.time_limit_s!r}")
        for key in ("memory_mb", "max_output_bytes", "max_open_files", "concurrency"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"python_exec: {key} must be an int >= 1, got {v!r}")
        self._extract = get_extractor(self.extract)

    async def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Scores:
        expected = context.get("expected_stdout")
        tests = context.get("test_code")
        gate = asyncio.Semaphore(self.concurrency)

        async def one(j: int, completion: str) -> float:
            code = self._extract(completion)
            if code is None:
                self._counts["no_code"] += 1
                return 0.0
            test = tests[j] if tests is not None else None
            async with gate:
                result = await self.run(code, test_code=test)
            return self._reward(result, expected[j] if expected is not None else None)

        return list(await asyncio.gather(*(one(j, c) for j, c in enumerate(completions))))

    def _reward(self, result: ExecResult, expected: str | Callable[[str], Any] | None) -> float:
        self._counts["runs"] += 1
        self._counts["timeouts"] += result.timed_out
        if not result.ok:
            self._counts["failures"] += 1
            return 0.0
        if expected is None:
            return 1.0
        if callable(expected):
            value = float(expected(result.stdout))
            if not math.isfinite(value):
                raise ValueError(f"python_exec: expected_stdout predicate returned {value!r}")
            return value
        return float(_normalize_output(result.stdout) == _normalize_output(expected))

    async def run(self, code: str, test_code: str | None = None) -> ExecResult:
        """Run one program (or expression, in expression mode) under the limits."""
        if self.mode == "expression":
            program, argv = _EVAL_PROGRAM, [code.strip()]
        else:
            program, argv = code if test_code is None else f"{code}\n\n{test_code}\n", []
        limits = (math.ceil(self.time_limit_s) + 1, self.memory_mb * 2**20, self.max_output_bytes,
                  self.max_open_files)
        with tempfile.TemporaryDirectory(prefix="tao_exec_") as tmp:
            out_path, err_path = Path(tmp, ".stdout"), Path(tmp, ".stderr")
            work = Path(tmp, "work")
            work.mkdir()
            env = {"PATH": os.defpath, "LC_ALL": "C.UTF-8", "HOME": str(work)}
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-I", "-c", program, *argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                    cwd=work, env=env, start_new_session=True, preexec_fn=lambda: _set_limits(*limits),
                )
                try:
                    returncode: int | None = await asyncio.wait_for(proc.wait(), self.time_limit_s)
                    timed_out = False
                except TimeoutError:
                    returncode, timed_out = None, True
                finally:
                    _kill_group(proc.pid)  # also any child it left running in the background
                    await proc.wait()
            read = lambda p: p.read_bytes()[: self.max_output_bytes].decode("utf-8", "replace")
            return ExecResult(returncode=returncode, stdout=read(out_path), stderr=read(err_path), timed_out=timed_out)

    def metrics(self) -> dict[str, float]:
        """timeouts (runs killed at time_limit_s), failures (non-zero exits and wrong output), no_code (replies with
        no code found); counts since the previous call."""
        out = {k: float(self._counts[k]) for k in ("timeouts", "failures", "no_code")}
        self._counts.clear()
        return out


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
