"""`DistributedContext`: who this process is in a data-parallel run, read once from the launcher's environment and
passed explicitly to whatever needs it (TAO, the metrics reduction, the gradient sync). No global state of ours:
torch.distributed's default process group is the only thing set up, by `init_process_group`, and torn down by
`destroy_process_group`.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR / MASTER_PORT for the rendezvous); without WORLD_SIZE
the process is a plain single-process run and `from_env` returns None.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from tao_engine.distributed.config import DistributedSection


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str  # "nccl" or "gloo", resolved
    device: str  # where this rank's model lives: "cuda:<local_rank>" under nccl, "cpu" under gloo
    strategy: str = "ddp"
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"DistributedContext: rank {self.rank} is not in [0, world_size={self.world_size})")
        if self.local_rank < 0:
            raise ValueError(f"DistributedContext: local_rank must be >= 0, got {self.local_rank}")
        if self.backend not in ("nccl", "gloo"):
            raise ValueError(f"DistributedContext: backend must be 'nccl' or 'gloo', got {self.backend!r}")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes metrics, plots, checkpoints and the final model."""
        return self.rank == 0

    @classmethod
    def from_env(
        cls, section: DistributedSection | None = None, env: Mapping[str, str] | None = None
    ) -> DistributedContext | None:
        """The context a launcher (torchrun) described in the environment, or None when not launched by one."""
        env = os.environ if env is None else env
        section = section or DistributedSection()
        if "WORLD_SIZE" not in env:
            return None
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing:
            raise ValueError(
                f"distributed: WORLD_SIZE is set but {missing} are not; launch with torchrun "
                "(`torchrun --nproc-per-node K -m tao_engine tune ...`), which sets them all"
            )
        rank, world = _int_env(env, "RANK"), _int_env(env, "WORLD_SIZE")
        local_rank = _int_env(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
        backend = section.backend
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl" and not torch.cuda.is_available():
            raise ValueError("[distributed] backend = 'nccl' needs CUDA devices; use backend = 'gloo' on CPU")
        device = f"cuda:{local_rank}" if backend == "nccl" else "cpu"
        return cls(rank, world, local_rank, backend, device, section.strategy, float(section.timeout_s))


def init_process_group(ctx: DistributedContext) -> None:
    """Join the default process group (the rendezvous address comes from MASTER_ADDR / MASTER_PORT). A collective
    that waits longer than `ctx.timeout_s` raises instead of hanging."""
    import torch.distributed as dist

    if dist.is_initialized():
        raise RuntimeError("distributed: a process group is already initialised in this process")
    if ctx.backend == "nccl":
        torch.cuda.set_device(ctx.local_rank)  # "cuda" now means this rank's GPU, for loading and collectives
    dist.init_process_group(
        backend=ctx.backend,
        rank=ctx.rank,
        world_size=ctx.world_size,
        timeout=datetime.timedelta(seconds=ctx.timeout_s),
    )


def destroy_process_group() -> None:
    """Leave the process group. Garbage is collected first: FSDP2 units and their device mesh sit in reference
    cycles that hold the process group, and freed at interpreter exit (after the group is gone) gloo can abort the
    process ("terminate called without an active exception")."""
    import gc

    import torch.distributed as dist

    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def _int_env(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ValueError(f"distributed: environment variable {name}={env[name]!r} is not an integer") from None
