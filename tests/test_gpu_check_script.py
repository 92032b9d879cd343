"""bench/gpu_check.py on a machine without a usable CUDA device: a clear message, exit code 0, nothing written; and
its --dry-run, which walks every stage on the CPU (imports, the case list, a small ahead-of-time compile, the report
written after each stage) so that the first GPU run does not die on a typo.

The script runs in a subprocess with CUDA_VISIBLE_DEVICES="" so that the test means the same on a GPU machine, and
without TRITON_INTERPRET (which tests/conftest.py sets here): the GPU check compiles its kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
sys.path.insert(0, str(ROOT / "bench"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}, "CUDA_VISIBLE_DEVICES": ""}
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
    for option in ("--out", "--skip-timing", "--skip-generate", "--dry-run", "--budget-s", "--skip-build"):
        assert option in done.stdout


def test_dry_run_walks_every_stage_and_writes_the_report(tmp_path: Path):
    done = _run("--dry-run", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["bench"] == "gpu_check" and summary["results"][0]["failed"] == 0
    report = (tmp_path / "dry_run_on_cpu.md").read_text()
    for heading in ("## Backends", "## Correctness", "## Child runs", "## Output of each run"):
        assert heading in report, heading
    from gpu_check_cases import CASES

    for case in CASES:  # every correctness case is listed
        assert f"| {case.fn.__name__} |" in report, case.fn.__name__
    assert "| aot_check sm90 | ok |" in report  # the ahead-of-time compile ran (two kernels) and passed
    assert "_rms_norm_fwd_kernel" in (tmp_path / "aot-sm90-quick.md").read_text()
    for name in ("build _C with CUDA", "pytest -m gpu", "bench_rms_norm.py"):
        assert f"| {name} | skipped |" in report, name


def test_a_run_out_of_time_still_writes_what_it_has(tmp_path: Path):
    done = _run("--dry-run", "--budget-s", "0", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "dry_run_on_cpu.md").read_text()
    assert "## Correctness" in report and "| aot_check sm90 | skipped |" in report
