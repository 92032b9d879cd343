"""Only rank 0 writes (metrics, plots, checkpoints, the final model): the other ranks get a metrics log that keeps
nothing, so the TAO loop calls it the same way on every rank (tao_engine.rl.parallel_strategy picks which)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


class NullMetricsLog:
    """MetricsLog's interface, writing nothing (ranks other than 0)."""

    def truncate_after(self, step: int) -> None:
        pass

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        pass

    def records(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass

    def plot(self, keys: tuple[str, ...] = ()) -> list[Path]:
        return []

    def plot_scorers(self) -> list[Path]:
        return []
