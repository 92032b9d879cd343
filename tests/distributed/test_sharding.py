"""Sharding a step's prompts across ranks: whole prompts in contiguous slices, and every prompt gets the seed the
single-process engine would have drawn for it, whichever rank rolls it out; generators stay in lockstep."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tao_engine.distributed.context import DistributedContext
from tao_engine.distributed.sharding import rollout_shard, shard_range
from tao_engine.engine.sampling_params import SamplingParams, resolve_seed


def _ctx(rank: int, world: int) -> DistributedContext:
    return DistributedContext(rank=rank, world_size=world, local_rank=rank, backend="gloo", device="cpu")


@pytest.mark.parametrize("count,world", [(8, 2), (7, 3), (1, 4), (0, 2), (129, 5)])
def test_shard_range_partitions_in_order(count, world):
    slices = [shard_range(count, world, r) for r in range(world)]
    covered = [i for start, stop in slices for i in range(start, stop)]
    assert covered == list(range(count))
    sizes = [stop - start for start, stop in slices]
    assert max(sizes) - min(sizes) <= 1


def test_even_sharding_refuses_a_remainder():
    assert shard_range(8, 4, 3, even=True) == (6, 8)
    with pytest.raises(ValueError, match="prompts_per_step = 7 does not split evenly across 2 ranks"):
        shard_range(7, 2, 0, even=True)


def _engine_seeds(generator: torch.Generator, prompts: list[int]) -> dict[int, int]:
    # What Engine.add_request does for each prompt of one generate call: one draw, in order.
    return {p: resolve_seed(SamplingParams(), generator) for p in prompts}


@pytest.mark.parametrize("world,even", [(2, True), (4, True), (3, False)])
def test_every_prompt_gets_the_single_process_seed(world, even):
    steps = [[5, 1, 7, 2, 0, 3, 6, 4], [9, 8, 11, 10, 12, 13, 15, 14]]
    single = torch.Generator().manual_seed(11)
    expected, states = [], []
    for indices in steps:
        expected.append(_engine_seeds(single, indices))
        states.append(single.get_state())
    generators = [torch.Generator().manual_seed(11) for _ in range(world)]
    for step, indices in enumerate(steps):
        seen: dict[int, int] = {}
        for rank in range(world):
            g = generators[rank]
            roll = lambda mine, g=g: _engine_seeds(g, mine)  # noqa: E731
            got = rollout_shard(_ctx(rank, world), g, indices, SamplingParams(), roll, even=even)
            seen.update(got or {})
        assert seen == expected[step]
        for g in generators:  # lockstep with the single process: a checkpoint from any rank resumes anywhere
            assert torch.equal(g.get_state(), states[step])


def test_an_empty_slice_rolls_nothing_and_a_fixed_seed_draws_nothing():
    calls = []
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    assert rollout_shard(_ctx(2, 3), g, [4, 5], SamplingParams(), calls.append) is None
    assert calls == []
    fixed = dataclasses.replace(SamplingParams(), seed=1234)
    rollout_shard(_ctx(0, 3), g, [4, 5], fixed, calls.append)
    rollout_shard(_ctx(0, 3), g, [4, 5], fixed, calls.append)
    assert calls == [[4], [4]]
    single = torch.Generator().manual_seed(0)
    _engine_seeds(single, [4, 5])
    assert torch.equal(g.get_state(), single.get_state())  # only the unseeded call advanced it, by two prompts
    assert not torch.equal(g.get_state(), before)
