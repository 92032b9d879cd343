"""Sharded update (`strategy = "fsdp2"`): the ddp strategy's global batch and plan, on an FSDP2-sharded module.

What differs from `DataParallelUpdate` (gradient_sync.py), and why:
- gradients: FSDP2 reduce-scatters (sums) each unit's gradient at the end of every backward, so `sync_gradients`
  only sums the loss for the log (it is also the health exchange before the optimizer step);
- lockstep: each FSDP2 forward and backward is a collective, so every rank runs as many micro-steps per minibatch
  as the busiest rank; `lockstep_micro_steps` counts them from the global plan (no communication), and
  `train_step` fills the gap with idle micro-steps (one token, zero loss: they add exact zeros to the gradients);
- no-grad forwards (old and reference log-probs) run inside `full_weights`, where forwards are local.
A rank that fails inside a forward or backward leaves the others in a collective until `[distributed] timeout_s`;
every other failure reaches them through the health exchanges.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import torch
from torch import nn

from tao_engine.distributed.exchange import exchange
from tao_engine.distributed.fsdp import full_weights
from tao_engine.distributed.gradient_sync import DataParallelUpdate, GlobalGroups


class ShardedUpdate(DataParallelUpdate):
    def sync_gradients(self, optimizer: torch.optim.Optimizer, loss: float) -> float:
        """The gradients are already summed by FSDP2's reduce-scatter; returns the loss summed across ranks."""
        return float(sum(exchange(self.ctx, loss, "update: sum the loss")))

    def lockstep_micro_steps(self, micro_batches: Sequence[Sequence[int]], shard: GlobalGroups) -> int:
        """The largest number of micro-batches any rank owns a group of (the micro-steps every rank runs)."""
        return max(
            (sum(1 for micro in micro_batches if any(start <= g < end for g in micro)) for start, end in shard.bounds),
            default=0,
        )

    def full_weights(self, module: nn.Module, phase: str) -> AbstractContextManager[nn.Module]:
        return full_weights(module, self.ctx, phase)
