"""bench/isolated.py: a bench provider in its own child process ends as a result or as a status saying how it failed
(crash by signal, hang, missing dependency, error), never taking the benchmark down."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from isolated import run_child  # noqa: E402

PROTOCOL = "import sys; sys.path.insert(0, {bench!r}); from isolated import *; "


def _child(body: str) -> list[str]:
    bench = str(Path(__file__).resolve().parents[1] / "bench")
    return [sys.executable, "-c", PROTOCOL.format(bench=bench) + body]


def test_result_comes_back():
    outcome = run_child(_child("print('noise'); report_result({'tok/s': 12.5})"), timeout_s=60)
    assert outcome.status == "ok" and outcome.result == {"tok/s": 12.5}


def test_segfault_is_a_status():
    outcome = run_child(_child("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"), timeout_s=60)
    assert outcome.result is None and outcome.status == "crashed: signal 11 (SIGSEGV)"


def test_hang_is_killed():
    outcome = run_child(_child("import time; time.sleep(60)"), timeout_s=1)
    assert outcome.result is None and outcome.status == "hung: killed after 1 s"


def test_missing_dependency_is_a_status():
    outcome = run_child(_child("report_missing('llama-cpp-python is not installed')"), timeout_s=60)
    assert outcome.status == "missing: llama-cpp-python is not installed"


def test_error_names_its_last_line():
    outcome = run_child(_child("raise RuntimeError('no model here')"), timeout_s=60)
    assert outcome.status.startswith("failed: exit 1: RuntimeError: no model here")
