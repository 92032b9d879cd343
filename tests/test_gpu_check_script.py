"""bench/gpu_check.py on a machine without a usable CUDA device: a clear message, exit code 0, nothing written.

The script runs in a subprocess with CUDA_VISIBLE_DEVICES="" so that the test means the same on a GPU machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )


def test_without_cuda_it_says_so_and_exits_0(tmp_path: Path):
    out = tmp_path / "results"
    done = _run("--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "no CUDA device: nothing to check"
    assert not out.exists()  # no report for a machine that checked nothing


def test_help_lists_its_options():
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    for option in ("--out", "--skip-timing", "--skip-generate"):
        assert option in done.stdout
