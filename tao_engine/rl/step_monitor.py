"""`StepMonitor`: what a TAO step is doing, for the user and for the metrics.

The progress bar ticks once per step, and inside a step says what runs now (generating k/N samples, scoring,
updating micro-batch k/M, evaluating), so a first step that takes minutes visibly moves. Each phase is timed and its
peak memory measured; `step_metrics()` gives `step_s` (the whole step, everything up to its metrics line) and beside
it `<phase>_s` and `<phase>_peak_mb` for the phases that ran: generate (rollouts, and with exploration or tasks their
scoring too), score, update (train_step; its time is `train_s`), eval, holdout; `peak_memory_mb` is the run's peak so
far (the largest phase peak).

Peak memory per phase: on CUDA the allocator's peak since the phase began; on Linux CPUs the process's peak resident
set since the phase began (the kernel's high-water mark VmHWM, reset at each phase start through
/proc/self/clear_refs); elsewhere the lifetime peak (getrusage), which can only grow.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

_REFRESH_S = 0.5  # the bar is redrawn at most this often by sub-step progress (a step runs hundreds of engine steps)
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class PeakMemory:
    """The peak memory (MiB) of this process (or CUDA device) since the last `reset()`."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.resettable = self.device.type == "cuda" or _can_reset_rss()

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.resettable:
            _CLEAR_REFS.write_text("5")  # 5: reset the peak resident set size (Linux >= 4.0)

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.resettable:
            for line in _STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _can_reset_rss() -> bool:
    if sys.platform != "linux":
        return False
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return "VmHWM:" in _STATUS.read_text()


class StepMonitor:
    def __init__(self, total_steps: int, done_steps: int, show: bool, device: torch.device | str = "cpu") -> None:
        self.memory = PeakMemory(device)
        self._bar = None
        if show:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=done_steps, desc="tao", unit="step")
        self._step_start = time.perf_counter()
        self._seconds: dict[str, float] = {}
        self._peaks: dict[str, float] = {}
        self._run_peak = 0.0
        self._shown = (0.0, "")  # when the bar was last redrawn, and for what kind of message

    @property
    def shows_progress(self) -> bool:
        return self._bar is not None

    def start_step(self) -> None:
        self._step_start = time.perf_counter()
        self._seconds.clear()
        self._peaks.clear()

    @contextmanager
    def phase(self, name: str, label: str | None = None) -> Iterator[None]:
        """Time `name`, measure its peak memory, and show `label` (default: the name) on the bar meanwhile."""
        self.show(label or name, kind=name)
        self.memory.reset()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - start
            peak = self.memory.peak_mb()
            self._peaks[name] = max(self._peaks.get(name, 0.0), peak)
            self._run_peak = max(self._run_peak, peak)

    def seconds(self, name: str) -> float:
        """The time phase `name` has taken in this step so far (0 when it has not run)."""
        return self._seconds.get(name, 0.0)

    def samples(self, done: int, total: int) -> None:
        """Generation progress: `done` of `total` samples finished (the engine's callback)."""
        self.show(f"generating {done}/{total} samples", kind="samples")

    def micro_batch(self, done: int, total: int) -> None:
        """Update progress: `done` of `total` micro-batches (forward + backward) run (train_step's callback)."""
        self.show(f"updating micro-batch {done}/{total}", kind="micro-batches")

    def show(self, text: str, kind: str) -> None:
        """`text` on the bar: at once for a new kind of message, then at most every _REFRESH_S."""
        now = time.perf_counter()
        if self._bar is not None and (kind != self._shown[1] or now - self._shown[0] >= _REFRESH_S):
            self._shown = (now, kind)
            self._bar.set_postfix_str(text, refresh=True)

    def step_metrics(self) -> dict[str, float]:
        """`step_s` since `start_step()`, and each phase's seconds and peak memory (MiB)."""
        out = {"step_s": time.perf_counter() - self._step_start, "peak_memory_mb": self._run_peak}
        for name, seconds in self._seconds.items():
            out[f"{'train' if name == 'update' else name}_s"] = seconds
            out[f"{name}_peak_mb"] = self._peaks[name]
        return out

    def finish_step(self, metrics: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.update(1)
            reward = metrics.get("reward_mean")
            self._bar.set_postfix_str(f"reward {reward:.3f}, {metrics['step_s']:.0f}s/step"
                                      if isinstance(reward, (int, float)) else f"{metrics['step_s']:.0f}s/step")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
