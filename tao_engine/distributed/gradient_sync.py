"""Data-parallel update (`strategy = "ddp"`): every rank holds the whole model, trains on its own groups, and the
gradients are summed across ranks before clipping and the optimizer step, so every replica takes the same step.

Why the sum gives the single-process gradient: `train_step` plans minibatches and micro-batches over the GLOBAL
group list (every rank's rewards and completion lengths, gathered once per step), computes advantages with global
batch statistics, and weights each micro-batch by its share of the global minibatch (tokens or sequences). Each
rank then runs only the micro-batch groups it owns; summing the ranks' accumulated gradients gives exactly the
gradient one process would have accumulated over the whole batch.

Why not torch's DistributedDataParallel wrapper: DDP all-reduces inside every synchronised backward and needs the
same number of them on every rank, but ranks run different numbers of micro-batches (token-budget packing, groups
dropped by DAPO, a rank owning no group of a minibatch). Syncing once per minibatch after the local accumulation is
what DDP does under `no_sync()` plus one synced backward, without the dummy passes; the all-reduce is bucketed the
same way (flat buffers of at most `bucket_bytes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tao_engine.distributed.context import DistributedContext
from tao_engine.distributed.exchange import exchange


@dataclass(frozen=True)
class LengthsLayout:
    """The shape of the global batch without its tokens: what `plan_minibatches` reads (lengths only)."""

    prompt_token_ids: list[range]  # [P_global], len = prompt length
    completion_token_ids: list[list[range]]  # [P_global][n], len = completion length


@dataclass(frozen=True)
class GlobalGroups:
    """One step's groups across all ranks, in rank order; this rank owns [offset, offset + count)."""

    rewards: torch.Tensor  # [P_global, n] fp32, NaN = no reward
    layout: LengthsLayout
    offset: int
    count: int
    bounds: tuple[tuple[int, int], ...] = ()  # every rank's [start, end) of global groups, in rank order

    @property
    def rows(self) -> slice:
        return slice(self.offset, self.offset + self.count)

    def local(self, groups: Sequence[int]) -> list[int]:
        """This rank's groups among global group indices, as indices into its own rollouts."""
        return [g - self.offset for g in groups if self.offset <= g < self.offset + self.count]


class DataParallelUpdate:
    """Passed to `train_step(..., data_parallel=...)`: gathers the global batch and sums gradients across ranks."""

    def __init__(self, ctx: DistributedContext, bucket_bytes: int = 64 * 2**20) -> None:
        self.ctx = ctx
        self.bucket_bytes = bucket_bytes

    def gather(self, rollouts: Any, rewards: torch.Tensor) -> GlobalGroups:
        """rewards [P_local, n] -> every rank's rewards and lengths (one small all_gather of Python lists)."""
        payload = (
            int(rewards.shape[1]) if rewards.shape[0] else None,
            rewards.tolist(),
            [len(p) for p in rollouts.prompt_token_ids],
            [[len(c) for c in group] for group in rollouts.completion_token_ids],
        )
        parts = exchange(self.ctx, payload, "update: gather rewards")
        widths = {w for w, *_ in parts if w is not None}
        if len(widths) > 1:
            raise ValueError(f"train_step: ranks sampled different numbers of candidates per prompt: {sorted(widths)}")
        width = widths.pop() if widths else 0
        rows = [row for _, r, _, _ in parts for row in r]
        ends = [0]
        for _, r, _, _ in parts:
            ends.append(ends[-1] + len(r))
        offset = ends[self.ctx.rank]
        layout = LengthsLayout(
            prompt_token_ids=[range(n) for _, _, p, _ in parts for n in p],
            completion_token_ids=[[range(n) for n in group] for _, _, _, c in parts for group in c],
        )
        global_rewards = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), width)
        bounds = tuple(zip(ends[:-1], ends[1:], strict=True))
        return GlobalGroups(global_rewards, layout, offset, int(rewards.shape[0]), bounds)

    def lockstep_micro_steps(self, micro_batches: Sequence[Sequence[int]], shard: GlobalGroups) -> int:
        """How many micro-steps every rank must run for a minibatch: 0 here, where ranks may run different numbers
        (the gradients meet once, in `sync_gradients`). FSDP2 overrides it (its forwards are collectives)."""
        return 0

    def full_weights(self, module: nn.Module, phase: str) -> AbstractContextManager[nn.Module]:
        """A block in which `module` forwards with its full weights and no collective: every rank holds them here."""
        return nullcontext(module)

    def sync_gradients(self, optimizer: torch.optim.Optimizer, loss: float) -> float:
        """Sum every trainable parameter's gradient across ranks (None counts as zeros); returns the summed loss."""
        import torch.distributed as dist

        total = float(sum(exchange(self.ctx, loss, "update: gradient all-reduce")))
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for bucket in _buckets(params, self.bucket_bytes):
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            start = 0
            for p in bucket:
                p.grad = flat[start : start + p.numel()].view_as(p)  # views of the reduced buffer: no extra copy
                start += p.numel()
        return total


def broadcast_parameters(ctx: DistributedContext, module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (replicas must start identical)."""
    import torch.distributed as dist

    device = next(module.parameters()).device
    wanted = "cuda" if ctx.backend == "nccl" else "cpu"
    if device.type != wanted:
        raise ValueError(
            f"distributed: backend {ctx.backend!r} needs the model on {wanted}, but it is on {device}; "
            + ("set [engine] device = \"cuda\" (each rank uses its LOCAL_RANK's GPU)" if wanted == "cuda"
               else "use [distributed] backend = \"nccl\" for a model on GPUs")
        )
    exchange(ctx, None, "broadcast initial weights")
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def _buckets(params: list[torch.Tensor], bucket_bytes: int) -> list[list[torch.Tensor]]:
    # Same dtype and device within a bucket (one flat buffer each); order is the optimizer's, identical on all ranks.
    out: list[list[torch.Tensor]] = []
    used = 0
    for p in params:
        size = p.numel() * p.element_size()
        if out and out[-1][0].dtype == p.dtype and out[-1][0].device == p.device and used + size <= bucket_bytes:
            out[-1].append(p)
            used += size
        else:
            out.append([p])
            used = size
    return out
