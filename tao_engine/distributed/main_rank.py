"""Only rank 0 writes (metrics, plots, checkpoints, the final model): the other ranks get a metrics log that keeps
nothing, so the TAO loop calls it the same way on every rank."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tao_engine.distributed.context import DistributedContext


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


def writes_outputs(ctx: DistributedContext | None) -> bool:
    """True in a single process and on rank 0."""
    return ctx is None or ctx.is_main


def metrics_log_for(ctx: DistributedContext | None, run_dir: str | Path):
    from tao_engine.rl.metrics_log import MetricsLog

    return MetricsLog(run_dir) if writes_outputs(ctx) else NullMetricsLog()
