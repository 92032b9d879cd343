"""Python execution scorer: subprocess isolation, timeout, memory / output limits, expected stdout and tests."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tao_engine.scoring.base import run_scorer
from tao_engine.scoring.python_exec import PythonExecScorer


def score(scorer, completions, **context):
    """Score the completions as one group (context per prompt)."""
    return run_scorer(scorer, ["p"], [completions], **{k: [v] for k, v in context.items()})[0]


def test_exit_status_and_expected_stdout():
    s = PythonExecScorer(extract="stripped", time_limit_s=5.0)
    texts = ["print(6 * 7)", "print(41)", "raise SystemExit(2)", "1/0"]
    assert score(s, texts) == [1.0, 1.0, 0.0, 0.0]
    got = run_scorer(s, ["p", "q"], [texts[:2], texts[:2]], expected_stdout=["42\n", "41  "])
    assert got == [[1.0, 0.0], [0.0, 1.0]]


def test_fenced_block_test_code_and_predicate():
    s = PythonExecScorer()  # extracts the ```python block
    good = "Here:\n```python\ndef add(a, b):\n    return a + b\n```"
    bad = "```python\ndef add(a, b):\n    return a - b\n```"
    assert score(s, [good, bad, "no code at all"], test_code="assert add(2, 3) == 5") == [1.0, 0.0, 0.0]
    assert s.metrics()["no_code"] == 1.0
    half = PythonExecScorer(extract="stripped")
    pred = lambda out: 0.5 if out.strip().isdigit() else 0.0  # noqa: E731
    assert run_scorer(half, ["p"], [["print(12)", "print('x')"]], expected_stdout=[pred]) == [[0.5, 0.0]]


def test_expression_mode():
    s = PythonExecScorer(mode="expression", extract="stripped")
    assert score(s, ["2 ** 10", "sum(range(5))", "1 +"], expected_stdout="1024") == [1.0, 0.0, 0.0]


def test_timeout_kills_the_run_quickly():
    s = PythonExecScorer(extract="stripped", time_limit_s=0.5)
    start = time.monotonic()
    assert score(s, ["while True:\n    pass", "import time\ntime.sleep(60)", "print(1)"]) == [0.0, 0.0, 1.0]
    assert time.monotonic() - start < 5.0
    assert s.metrics()["timeouts"] == 2.0


def test_memory_limit_stops_a_huge_allocation():
    s = PythonExecScorer(extract="stripped", memory_mb=256)
    result = asyncio.run(s.run("x = bytearray(2 * 1024**3)\nprint('allocated')"))
    assert result.returncode != 0 and "MemoryError" in result.stderr and "allocated" not in result.stdout
    assert asyncio.run(s.run("x = bytearray(16 * 1024**2)\nprint(len(x))")).stdout.strip() == str(16 * 1024**2)


def test_output_flood_is_capped():
    s = PythonExecScorer(extract="stripped", max_output_bytes=4096, time_limit_s=5.0)
    start = time.monotonic()
    result = asyncio.run(s.run("while True:\n    print('x' * 1000)"))
    assert not result.ok and not result.timed_out  # killed by the file-size limit, well before the timeout
    assert len(result.stdout) <= 4096 and time.monotonic() - start < 5.0


def test_never_in_process_and_isolated_environment(tmp_path):
    marker = "TAO_EXEC_LEAK_TEST"
    s = PythonExecScorer(extract="stripped")
    code = f"import os, sys\nos.environ['{marker}'] = '1'\nprint(sorted(os.environ), os.getcwd())\nsys.exit(0)"
    result = asyncio.run(s.run(code))
    assert result.ok and marker not in os.environ
    assert "HOME" in result.stdout and "tao_exec_" in result.stdout and str(tmp_path) not in result.stdout
    assert not os.path.exists(result.stdout.split()[-1])  # its working directory is gone afterwards


def test_bad_params():
    with pytest.raises(ValueError, match="mode"):
        PythonExecScorer(mode="shell")
    with pytest.raises(ValueError, match="memory_mb"):
        PythonExecScorer(memory_mb=0)
