"""One metrics record per step for the whole run: each rank's step metrics are combined into one dict, the same on
every rank, before rank 0 logs it.

Counts add up (generated tokens, trained tokens, throughput), times (`*_s`) and peak memory (`*_peak_mb`) take the
slowest rank (the step waits for it), everything else is the mean over the ranks that report it. Metrics
`train_step` computes from the gathered global batch (reward mean/std, advantages, groups trained, loss, grad norm,
lr) are already equal on every rank, so their mean is themselves. The scorers' own statistics (`score/...`) come
from each rank's shard and are averaged: exact for means over equal shards, an approximation for their spreads (the
mean of the ranks' stds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tao_engine.distributed.context import DistributedContext
from tao_engine.distributed.exchange import exchange

SUM_KEYS = frozenset({"generated_tokens", "tokens", "generate_tok/s", "idle_micro_steps"})
MAX_KEYS = frozenset({"peak_memory_mb"})


def combine_metrics(per_rank: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's metrics from every rank's (same keys in the same order as rank 0 where possible)."""
    keys = list(dict.fromkeys(k for metrics in per_rank for k in metrics))
    out: dict[str, Any] = {}
    for key in keys:
        values = [m[key] for m in per_rank if key in m]
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) != len(values):
            out[key] = values[0]  # not a number (text, None): rank 0's (or the first reporter's)
            continue
        finite = [v for v in numbers if math.isfinite(v)]
        if not finite:
            out[key] = math.nan
        elif key in SUM_KEYS:
            out[key] = sum(finite)
        elif key in MAX_KEYS or key.endswith(("_s", "_peak_mb")):
            out[key] = max(finite)
        else:
            out[key] = sum(finite) / len(finite)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values) and float(out[key]).is_integer():
            out[key] = int(out[key])
    return out


def reduce_metrics(ctx: DistributedContext, metrics: Mapping[str, Any]) -> dict[str, Any]:
    return combine_metrics(exchange(ctx, dict(metrics), "reduce step metrics"))
