"""Run one bench provider in its own child process, so that a peer that crashes, hangs or is missing becomes a row of
the table instead of taking the benchmark down (llama-cpp-python 0.3.36 segfaults on some CPUs after its first call).

Protocol: the child prints `RESULT <json>` on success, or `MISSING <why>` and exits with MISSING_EXIT when an
optional dependency is absent. Everything else is judged from outside: a negative exit status is a signal, a child
that outlives its time limit is killed (with its process group, so threads and grandchildren go too).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

MISSING_EXIT = 3


@dataclass(frozen=True)
class ChildOutcome:
    result: dict[str, Any] | None  # the child's RESULT, when it finished cleanly
    status: str  # "ok", "missing: ...", "crashed: signal 11 (SIGSEGV)", "hung: killed after 900 s", "failed: ..."


def report_missing(why: str) -> None:
    """Called in a child whose optional dependency is absent: says so in the protocol and exits."""
    print(f"MISSING {why}", flush=True)
    sys.exit(MISSING_EXIT)


def report_result(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def run_child(cmd: list[str], timeout_s: float) -> ChildOutcome:
    """Run `cmd` (a bench script in child mode) and classify how it ended; a child that did not finish cleanly has
    the tail of its stderr echoed to ours."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        return _echo(stderr, ChildOutcome(None, f"hung: killed after {timeout_s:.0f} s"))
    lines = stdout.splitlines()
    results = [line.removeprefix("RESULT ") for line in lines if line.startswith("RESULT ")]
    missing = [line.removeprefix("MISSING ") for line in lines if line.startswith("MISSING ")]
    code = proc.returncode
    if code == MISSING_EXIT and missing:
        return ChildOutcome(None, f"missing: {missing[-1]}")
    if code < 0:
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        return _echo(stderr, ChildOutcome(None, f"crashed: signal {-code}{name}"))
    if code != 0 or not results:
        tail = next((line for line in reversed(stderr.splitlines()) if line.strip()), "no output")
        return _echo(stderr, ChildOutcome(None, f"failed: exit {code}: {tail[-200:]}"))
    return ChildOutcome(json.loads(results[-1]), "ok")


def _echo(stderr: str, outcome: ChildOutcome) -> ChildOutcome:
    tail = stderr.splitlines()[-20:]
    if tail:
        print("\n".join(["--- child stderr (last lines) ---", *tail, "---"]), file=sys.stderr)
    return outcome
