"""Where a tuning run's numbers go: one JSON line per step in `metrics.jsonl`, TensorBoard scalars when tensorboard
is installed, and PNG plots of reward and eval curves at the end (matplotlib, the `plots` extra)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._tb = None
            else:
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """A resumed run drops the lines logged after its checkpoint, so the log reads as one uninterrupted run."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._tb.add_scalar(key, value, step)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()

    def plot(self, keys: tuple[str, ...] = ("reward_mean", "eval_score")) -> list[Path]:
        """One PNG per key present in the log (reward, eval); [] when matplotlib is not installed."""
        try:
            import matplotlib

            matplotlib.use("Agg")  # files only, never a window
            import matplotlib.pyplot as plt
        except ImportError:
            return []
        records = self.records()
        written: list[Path] = []
        for key in keys:
            points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
            points = [(s, v) for s, v in points if math.isfinite(v)]
            if not points:
                continue
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3)
            ax.set_xlabel("step")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            path = self.run_dir / f"{key}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
        return written


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None reads back as "not measured"
    return value
