"""Data-parallel TAO on torch.distributed: `torchrun --nproc-per-node K -m tao_engine tune ...`.

- `context.py`: `DistributedContext` (rank, world size, backend, device) from torchrun's environment; process group.
- `sharding.py`: each rank's contiguous slice of the step's prompts, with the seeds one process would have used.
- `gradient_sync.py`: `DataParallelUpdate` (global batch statistics and plan, gradients summed across ranks).
- `fsdp.py`: FSDP2 sharding of the one module (full weights gathered for generation, full checkpoints);
  `sharded_update.py`: `ShardedUpdate`, the update on it (ranks in lockstep, reduce-scattered gradients).
- `exchange.py`: collectives that carry a health flag, so one failing rank stops every rank with a clear error.
- `reduce.py`: one metrics record per step from every rank's; `main_rank.py`: only rank 0 writes files.
"""

from __future__ import annotations

from tao_engine.distributed.config import DistributedSection
from tao_engine.distributed.context import DistributedContext, destroy_process_group, init_process_group
from tao_engine.distributed.exchange import RankFailure, exchange, run_guarded
from tao_engine.distributed.gradient_sync import DataParallelUpdate, broadcast_parameters

__all__ = [
    "DataParallelUpdate",
    "DistributedContext",
    "DistributedSection",
    "RankFailure",
    "broadcast_parameters",
    "destroy_process_group",
    "exchange",
    "init_process_group",
    "run_guarded",
]
