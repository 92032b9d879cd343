"""Which prompts a rank rolls out, and with which seeds, so that K ranks see exactly the samples one process would.

Every rank runs the same prompt cursor, so all know the step's global prompt list; rank r takes one contiguous slice
of it (a prompt's n candidates never split across ranks). The engine gives each request a seed drawn from its own
generator, one draw per prompt in order; a single process drawing for prompts 0..P-1 gives prompt i the i-th draw.
A rank therefore skips the draws of the prompts before its slice, rolls out its slice (drawing their seeds), and
then leaves its generator exactly where the single process would be after all P prompts. The generators of all
ranks stay in lockstep, and a checkpoint saved by any rank resumes at any world size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from tao_engine.distributed.context import DistributedContext
from tao_engine.engine.sampling_params import SamplingParams, resolve_seed

T = TypeVar("T")
_UNSEEDED = SamplingParams()  # seed=None: resolve_seed draws from the generator, exactly as the engine does


def shard_range(count: int, world_size: int, rank: int, even: bool = False) -> tuple[int, int]:
    """[start, stop) of rank's contiguous slice of `count` items. even=True: count must divide by world_size;
    otherwise the first count % world_size ranks take one item more."""
    if even and count % world_size:
        raise ValueError(
            f"[data] prompts_per_step = {count} does not split evenly across {world_size} ranks; use a multiple of "
            f"{world_size} (each rank rolls out prompts_per_step / world_size whole prompts)"
        )
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def advance_seed_generator(generator: torch.Generator, draws: int) -> None:
    """Consume `draws` request seeds, as the engine would for that many prompts."""
    for _ in range(draws):
        resolve_seed(_UNSEEDED, generator)


def rollout_shard(
    ctx: DistributedContext,
    generator: torch.Generator,
    indices: Sequence[int],
    sampling: SamplingParams,
    roll: Callable[[list[int]], T],
    even: bool = False,
) -> T | None:
    """`roll(this rank's slice of indices)` with the engine's seed generator positioned as a single process would
    have it for that slice; None when the slice is empty (possible only with even=False)."""
    start, stop = shard_range(len(indices), ctx.world_size, ctx.rank, even)
    draws = 0 if sampling.seed is not None else 1  # a fixed seed draws nothing from the generator
    before = generator.get_state()
    advance_seed_generator(generator, start * draws)
    mine = list(indices[start:stop])
    result = roll(mine) if mine else None
    generator.set_state(before)
    advance_seed_generator(generator, len(indices) * draws)  # where one process would be after every prompt
    return result
