"""How a TAO run spreads over processes: one process, DDP replicas, or FSDP2 shards (`[distributed] strategy`).

The loop calls the same methods whatever the strategy, and each strategy answers for its own layout:
- `place`: replicas start identical (broadcast), FSDP2 shards the model and its reference copy;
- `rollout`: each rank rolls out its slice of a step's prompts with the seeds one process would have used;
- `total`, `reduce_metrics`, `first_stop`: every rank's counts, metrics and stop requests, combined the same on all;
- `full_weights`, `full_state`, `placement`: the full weights for generation, checkpoints and the final model;
- `writes_outputs`: only one process writes metrics, checkpoints and the final model; `metrics_log` follows it;
- `decides_alone`: whether this process may act without the other ranks agreeing (see SingleProcess).
`strategy_for(distributed)` picks one from the launch (tao_engine.distributed.DistributedContext, None: one process).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from tao_engine.distributed.context import DistributedContext
from tao_engine.distributed.exchange import exchange, run_guarded
from tao_engine.distributed.fsdp import (
    full_optimizer_state,
    full_state_dict,
    shard_like,
    shard_model,
    shard_optimizer_state,
)
from tao_engine.distributed.gradient_sync import DataParallelUpdate, broadcast_parameters
from tao_engine.distributed.main_rank import NullMetricsLog
from tao_engine.distributed.reduce import reduce_metrics
from tao_engine.distributed.sharded_update import ShardedUpdate
from tao_engine.distributed.sharding import rollout_shard
from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.rl.checkpoint import Placement
from tao_engine.rl.metrics_log import MetricsLog
from tao_engine.rl.reference import frozen_copy
from tao_engine.rl.rollouts import Rollouts

T = TypeVar("T")
StateFilter = Callable[[str], bool]  # state-dict name -> keep it


class SingleProcess:
    """One process holds the whole batch and the whole model: every collective is the identity."""

    data_parallel: DataParallelUpdate | None = None  # train_step's: None, the update sees the whole batch here
    writes_outputs = True
    # No other rank must agree, so this process may stop on a signal, rewind a failed step and checkpoint the one
    # before it, or probe before tuning (ranks would each probe their own samples and disagree).
    decides_alone = True

    def place(self, model: nn.Module, needs_reference: bool) -> nn.Module | None:
        """Make `model` ready for the optimizer; returns its frozen reference copy when one is needed."""
        return frozen_copy(model) if needs_reference else None

    def guarded(self, fn: Callable[[], T], what: str) -> T:
        return fn()

    def metrics_log(self, run_dir: str | Path) -> MetricsLog | NullMetricsLog:
        return MetricsLog(run_dir) if self.writes_outputs else NullMetricsLog()

    def rollout(self, model: nn.Module, generator: torch.Generator, indices: Sequence[int], sampling: SamplingParams,
                roll: Callable[[list[int]], Rollouts], like: Rollouts | None = None) -> Rollouts:
        """This process's share of `indices` rolled out by `roll` (here all of them). like: the batch a refill
        extends (a rank's share of a refill may be empty)."""
        return roll(list(indices))

    def total(self, count: int, phase: str) -> int:
        return count

    def reduce_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return metrics

    def first_stop(self, stop: str | None) -> str | None:
        """Why the run stops now, when any rank's guards say so (else None)."""
        return stop

    def full_weights(self, model: nn.Module, phase: str) -> AbstractContextManager[nn.Module]:
        """The model with its full weights for the engine, scorers and evaluation."""
        return nullcontext(model)

    def full_state(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, phase: str,
                   only: StateFilter | None = None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(model state, optimizer state) with full tensors for a checkpoint or the final model; None where the module
        and optimizer are whole and are read as they are."""
        return None, None

    def placement(self) -> Placement | None:
        """How a checkpoint's full tensors become this model's (None: as they are)."""
        return None


class DataParallel(SingleProcess):
    """DDP: every rank holds a replica, rolls out its slice of the prompts; gradients are summed across ranks and
    rank 0 writes. A rank that fails tells the others (`guarded`), so they stop instead of waiting forever."""

    decides_alone = False

    def __init__(self, ctx: DistributedContext) -> None:
        self.ctx = ctx
        self.data_parallel = self._update(ctx)
        self.writes_outputs = ctx.is_main

    @staticmethod
    def _update(ctx: DistributedContext) -> DataParallelUpdate:
        return DataParallelUpdate(ctx)

    def place(self, model: nn.Module, needs_reference: bool) -> nn.Module | None:
        broadcast_parameters(self.ctx, model)  # replicas start identical, before the reference copy sees them
        return super().place(model, needs_reference)

    def guarded(self, fn: Callable[[], T], what: str) -> T:
        return run_guarded(self.ctx, fn, what)

    def rollout(self, model: nn.Module, generator: torch.Generator, indices: Sequence[int], sampling: SamplingParams,
                roll: Callable[[list[int]], Rollouts], like: Rollouts | None = None) -> Rollouts:
        """The step's main batch splits evenly across ranks; a refill may not, and a rank may get none."""
        with self.full_weights(model, "rollout"):  # FSDP2: every rank gathers, even one with no prompt in a refill
            out = rollout_shard(self.ctx, generator, indices, sampling, roll, even=like is None)
        return out if out is not None or like is None else like.select([])

    def total(self, count: int, phase: str) -> int:
        return sum(exchange(self.ctx, count, phase))

    def reduce_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return reduce_metrics(self.ctx, metrics)  # one record for the run, the same on every rank

    def first_stop(self, stop: str | None) -> str | None:
        # A guard on one rank's shard stops every rank, or none would return from the next collective.
        return next((s for s in exchange(self.ctx, stop, "guards: stop the run?") if s), None)

    def full_weights(self, model: nn.Module, phase: str) -> AbstractContextManager[nn.Module]:
        return self.data_parallel.full_weights(model, phase)


class FullySharded(DataParallel):
    """FSDP2: parameters, gradients and optimizer state sharded across ranks (tao_engine.distributed.fsdp). Full
    weights are gathered for generation; checkpoints gather full tensors onto rank 0, which writes the files a single
    process would, and every rank keeps its shard of a loaded one: checkpoints load at any world size."""

    @staticmethod
    def _update(ctx: DistributedContext) -> DataParallelUpdate:
        return ShardedUpdate(ctx)

    def place(self, model: nn.Module, needs_reference: bool) -> nn.Module | None:
        """Shards before the optimizer sees the parameters; the reference is sharded alike."""
        reference = super().place(model, needs_reference)
        if reference is not None:
            shard_model(reference, self.ctx)
        shard_model(model, self.ctx)
        return reference

    def full_state(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, phase: str,
                   only: StateFilter | None = None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Every rank gathers; the full tensors land on rank 0."""
        exchange(self.ctx, None, f"{phase}: gather the state")  # a failed rank stops the others first
        states = full_state_dict(model, self.ctx, only)
        return states, full_optimizer_state(optimizer, self.ctx) if optimizer is not None else None

    def placement(self) -> Placement | None:
        return Placement(shard_like, shard_optimizer_state)


def strategy_for(distributed: DistributedContext | None) -> SingleProcess:
    """The strategy of this launch: one process (None), or `[distributed] strategy` ("ddp", "fsdp2")."""
    if distributed is None:
        return SingleProcess()
    return FullySharded(distributed) if distributed.strategy == "fsdp2" else DataParallel(distributed)
