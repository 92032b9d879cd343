"""Where a tuning run's numbers go: one JSON line per step in `metrics.jsonl`, TensorBoard scalars when tensorboard
is installed, and PNG plots at the end (matplotlib, the `plots` extra): reward and eval curves, each scorer's reward
and the share of zero-variance groups."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_SCORER_MEAN = re.compile(r"score/([^/]+)/mean")  # a scorer's (or the combined) mean reward of a step


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
        return [path for key in keys if (path := self._figure(key, {key: key}, key)) is not None]

    def plot_scorers(self) -> list[Path]:
        """scorer_rewards.png: each scorer's mean reward per step (and the combined one); zero_variance.png: the
        share of groups whose rewards are all equal (no learning signal under group-relative advantages), of the
        combined reward and of each scorer. [] when matplotlib is not installed or nothing was scored."""
        keys = sorted({k for r in self.records() for k in r})
        labels = [m.group(1) for k in keys if (m := _SCORER_MEAN.fullmatch(k))]
        rewards = {f"score/{label}/mean": label for label in labels}
        zero = {"zero_variance_frac": "trained reward",
                **{f"score/{label}/zero_variance_frac": label for label in labels if label != "combined"}}
        written = [self._figure("scorer_rewards", rewards, "mean reward"),
                   self._figure("zero_variance", zero, "zero-variance share of groups")]
        return [path for path in written if path is not None]

    def _figure(self, name: str, lines: Mapping[str, str], ylabel: str) -> Path | None:
        """{metric key: legend label} drawn against step into `<name>.png`; None when no key has a finite value."""
        try:
            import matplotlib

            matplotlib.use("Agg")  # files only, never a window
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        records = self.records()
        series = {}
        for key, label in lines.items():
            points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
            points = [(s, v) for s, v in points if math.isfinite(v)]
            if points:
                series[label] = points
        if not series:
            return None
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, points in series.items():
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = self.run_dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; None reads back as "not measured"
    return value
