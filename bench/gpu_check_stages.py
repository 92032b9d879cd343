"""The time budget and the child-process stages of bench/gpu_check.py: building `_C` with CUDA and the ahead-of-time
compile check for the GPU that is present.

The GPU check must finish within its budget (8 minutes on the expected H100 host, building included) and leave a
report even if it is cut short, so every stage gets at most the time left (and its own cap), stages that no longer fit
are reported as skipped, and the report is rewritten after each stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpu_check_benches import ROOT, ChildRun, _run

BUILD_CAP_S = 300.0  # the extension with CUDA, 16 cores: the .cu files and torch's headers dominate
AOT_CAP_S = 120.0


@dataclass
class Budget:
    """Seconds left of the whole check; `cap(stage)` is what one stage may take."""

    total_s: float
    start: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.total_s - (time.monotonic() - self.start)

    def cap(self, stage_cap_s: float) -> float:
        return max(0.0, min(stage_cap_s, self.left()))


def build_command() -> list[str]:
    """Reinstall the package editable, which rebuilds `_C` (with CUDA when torch and nvcc have it); no index needed."""
    return [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-e", "."]


def build_env(arch: str | None) -> dict[str, str]:
    """MAX_JOBS: every core; TORCH_CUDA_ARCH_LIST: the GPU present only (`arch` like "9.0"), not all torch knows."""
    env = {**os.environ, "MAX_JOBS": str(os.cpu_count() or 1), "TAO_BUILD_CUDA": "1"}
    if arch:
        env["TORCH_CUDA_ARCH_LIST"] = arch
    return env


def extension_has_cuda() -> bool:
    """Whether the installed `_C` holds the CUDA kernels (asked in a child: this process must not load the old one)."""
    code = "import tao_engine._C as c; print(bool(getattr(c, 'WITH_CUDA', False)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    return done.returncode == 0 and done.stdout.strip() == "True"


def build_extension(arch: str | None, timeout_s: float) -> ChildRun:
    """Build `_C` with CUDA unless it already has it."""
    if extension_has_cuda():
        return ChildRun("build _C with CUDA", 0, 0.0, "already built with CUDA: nothing to do", None, "")
    print("building tao_engine._C with CUDA ...", flush=True)
    run = _run("build _C with CUDA", build_command(), timeout_s, env=build_env(arch))
    if run.returncode == 0 and not extension_has_cuda():
        return ChildRun(run.name, 1, run.seconds, run.output[-3000:], None,
                        "the build finished but _C has no CUDA kernels (a CPU build of torch, or no nvcc?)")
    return ChildRun(run.name, run.returncode, run.seconds, run.output[-3000:], None, run.error_tail)


def aot_target(capability: tuple[int, int]) -> str | None:
    """bench/aot_check.py's target name for a CUDA compute capability, or None when it has none."""
    sys.path.insert(0, str(Path(__file__).parent))
    from aot_compile import TARGETS

    name = f"sm{capability[0]}{capability[1]}"
    return name if name in TARGETS else None


def run_aot_check(target: str, out_dir: Path, timeout_s: float, quick: bool = False, cases: str | None = None
                  ) -> ChildRun:
    """bench/aot_check.py for one target in a child process (TRITON_INTERPRET removed: compiled kernels only)."""
    cmd = [sys.executable, str(Path(__file__).parent / "aot_check.py"), "--targets", target, "--out", str(out_dir)]
    cmd += ["--quick"] if quick else []
    cmd += ["--cases", cases, "--cuda-sources", "none"] if cases else []
    print(f"running aot_check.py --targets {target} ...", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return _run(f"aot_check {target}", cmd, timeout_s, env=env)


def skipped(name: str, why: str) -> ChildRun:
    return ChildRun(name, None, 0.0, f"skipped: {why}", None, "")
