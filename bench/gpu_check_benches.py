"""The benchmark and test part of bench/gpu_check.py: every per-op benchmark (bench/bench_<op>.py) and the GPU tests
(`pytest -m gpu`), each in a child process, their output kept for the report.

Each op benchmark runs with its defaults, which on a machine with CUDA are its GPU shapes and providers; its table
(stdout up to the last line) goes into the report verbatim, and its last line, one JSON object (bench/common.py),
into the summary. A bench that fails its own checks exits non-zero, and so does the GPU check.

Every bench/bench_*.py is either in OP_BENCHES (run here) or in NOT_OP_BENCHES (end-to-end or CPU-only benchmarks,
run by hand); tests/test_op_benches.py fails when a new script is in neither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OP_BENCHES = (
    "bench_token_logprobs.py",
    "bench_linear_logprobs.py",
    "bench_sampling.py",
    "bench_paged_attention.py",
    "bench_paged_prefill_attention.py",
    "bench_kv_cache.py",
    "bench_policy_loss.py",
    "bench_advantages.py",
    "bench_rms_norm.py",
)
NOT_OP_BENCHES = (
    "bench_cpu_ops.py",  # CPU kernels against torch, SmolLM2 shapes on the CPU
    "bench_cpu_sampling.py",
    "bench_forward.py",  # end to end: a model's forward
    "bench_generate.py",  # end to end: generation against transformers and llama.cpp
    "bench_tao_step.py",  # end to end: one TAO step against TRL
    "bench_quality.py",  # end to end: hours of tuning
    "bench_distributed.py",  # data-parallel TAO steps on the CPU (gloo)
    "bench_tune_memory.py",  # end to end: a tuning run's peak memory
)


@dataclass(frozen=True)
class ChildRun:
    name: str  # the script, or "pytest -m gpu"
    returncode: int | None  # None: it did not finish in time, or the script is not there
    seconds: float
    output: str  # stdout without the closing JSON line
    summary: dict[str, object] | None  # the closing JSON line, parsed
    error_tail: str  # the end of stderr when it failed

    @property
    def result(self) -> str:
        if self.returncode is None:
            if self.output.startswith("skipped"):
                return "skipped"
            return "missing" if self.output.startswith("not present") else "TIMEOUT"
        return "ok" if self.returncode == 0 else "FAIL"


def _run(name: str, cmd: list[str], timeout_s: float, env: dict[str, str] | None = None) -> ChildRun:
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
                              env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return ChildRun(name, None, time.perf_counter() - start, out, None, f"timed out after {timeout_s:.0f} s")
    seconds = time.perf_counter() - start
    lines = done.stdout.rstrip().splitlines()
    summary = None
    if lines and lines[-1].startswith("{"):
        try:
            summary = json.loads(lines[-1])
            lines = lines[:-1]
        except json.JSONDecodeError:
            pass
    tail = "" if done.returncode == 0 else "\n".join(done.stderr.rstrip().splitlines()[-15:])
    return ChildRun(name, done.returncode, seconds, "\n".join(lines), summary, tail)


def run_op_benches(names: tuple[str, ...] = OP_BENCHES, timeout_s: float = 900.0,
                   extra_args: tuple[str, ...] = ()) -> list[ChildRun]:
    """Every op benchmark in a child process, one after the other (they would disturb each other's timings)."""
    runs = []
    for name in names:
        script = BENCH_DIR / name
        if not script.exists():
            runs.append(ChildRun(name, None, 0.0, "not present in this checkout", None, ""))
            continue
        print(f"running {name} ...", flush=True)
        runs.append(_run(name, [sys.executable, str(script), *extra_args], timeout_s))
    return runs


def run_gpu_tests(timeout_s: float = 1800.0) -> ChildRun:
    """The tests marked `gpu` (tests/ops/test_cuda_backends.py and others); the output keeps pytest's summary."""
    print("running pytest -m gpu ...", flush=True)
    # -P: the repository root (the working directory) stays off sys.path, as tests/conftest.py requires.
    run = _run("pytest -m gpu", [sys.executable, "-P", "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                 "tests"], timeout_s)
    # pytest prints its failures on stdout: keep the short summary at the end, not every traceback.
    lines = run.output.splitlines()
    return ChildRun(run.name, run.returncode, run.seconds, "\n".join(lines[-40:]), None, run.error_tail)


def summary_rows(runs: list[ChildRun]) -> list[dict[str, object]]:
    return [{"run": r.name, "result": r.result, "exit": r.returncode, "seconds": round(r.seconds, 1),
             "ratios": len((r.summary or {}).get("ratios", {}))} for r in runs]


def ratios(runs: list[ChildRun]) -> dict[str, float]:
    """Every bench's ratios, each key prefixed with its bench name."""
    merged: dict[str, float] = {}
    for run in runs:
        if run.summary:
            bench = run.summary.get("bench", run.name)
            merged.update({f"{bench}: {key}": value for key, value in run.summary.get("ratios", {}).items()})
    return merged


def markdown(runs: list[ChildRun]) -> str:
    """Each run's output as a fenced block under its own heading, with stderr's tail when it failed."""
    parts = []
    for run in runs:
        parts.append(f"\n### {run.name} ({run.result}, {run.seconds:.0f} s)\n\n```\n{run.output.strip()}\n```\n")
        if run.error_tail:
            parts.append(f"\nstderr (last lines):\n\n```\n{run.error_tail}\n```\n")
    return "".join(parts)
