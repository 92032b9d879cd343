"""The distributed pieces in this very process, as a world of one gloo rank: `train_step` through
`DataParallelUpdate` takes exactly the step it takes without it (global statistics, plan and gradient sum reduce to
the local ones), and `run_guarded` hands back a rank's own error. Fast; the 2-rank runs are in
test_data_parallel_tao.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.distributed as dist

from tao_engine.distributed import DataParallelUpdate, DistributedContext, exchange, run_guarded
from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.optim import OptimConfig, build_optimizer
from tao_engine.rl.rollouts import rollout
from tao_engine.rl.trainer import TrainConfig, train_step
from tests.distributed import tao_setup
from tests.tolerances import check


@pytest.fixture
def one_rank(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield DistributedContext(rank=0, world_size=1, local_rank=0, backend="gloo", device="cpu")
    finally:
        dist.destroy_process_group()


def _scored_batch():
    model = tao_setup.model()
    engine = Engine(model, EngineConfig(kv_cache_bytes=4 * 2**20, block_size=4))
    batch = rollout(engine, tao_setup.PROMPTS[:4], SamplingParams(n=4, temperature=1.0, max_tokens=5, seed=9,
                                                                   ignore_eos=True))
    gen = torch.Generator().manual_seed(1)
    return dataclasses.replace(batch, rewards=torch.rand(batch.num_prompts, batch.n, generator=gen).tolist())


@pytest.mark.parametrize("name", ["grpo", "reinforce_pp", "ppo", "bon_sft"])
def test_train_step_through_the_data_parallel_hook_is_unchanged(one_rank, name):
    batch = _scored_batch()
    config = TrainConfig(AlgorithmConfig(name=name), max_tokens_per_forward=48)
    results = []
    for data_parallel in (None, DataParallelUpdate(one_rank)):
        model = tao_setup.model()
        optimizer = build_optimizer(model, OptimConfig(lr=1e-2))
        stats = train_step(model, batch, optimizer, config, data_parallel=data_parallel)
        results.append((model.state_dict(), stats.as_dict()))
    (plain, plain_stats), (hooked, hooked_stats) = results
    for key in plain:
        torch.testing.assert_close(hooked[key], plain[key], atol=0, rtol=0, msg=key)
    assert any(not torch.equal(plain[k], tao_setup.model().state_dict()[k]) for k in plain)  # the step moved
    for key in ("reward_mean", "advantage_abs_mean", "groups_trained", "loss", "grad_norm", "optimizer_steps"):
        check("one_rank_metrics", torch.tensor(hooked_stats[key]), torch.tensor(plain_stats[key], dtype=torch.float64))


def test_gather_sees_the_batch_lengths_and_rewards(one_rank):
    batch = _scored_batch()
    rewards = torch.tensor(batch.rewards)
    groups = DataParallelUpdate(one_rank).gather(batch, rewards)
    assert torch.equal(groups.rewards, rewards) and (groups.offset, groups.count) == (0, batch.num_prompts)
    assert [len(p) for p in groups.layout.prompt_token_ids] == [len(p) for p in batch.prompt_token_ids]
    assert [[len(c) for c in g] for g in groups.layout.completion_token_ids] == [
        [len(c) for c in g] for g in batch.completion_token_ids
    ]
    assert groups.local([3, 1, 9]) == [3, 1]


def test_run_guarded_returns_and_reraises_this_ranks_own_error(one_rank):
    assert exchange(one_rank, {"a": 1}, "test") == [{"a": 1}]
    assert run_guarded(one_rank, lambda: 42) == 42

    def broken():
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom") as info:
        run_guarded(one_rank, broken)
    assert "raised on rank 0 of 1" in "".join(getattr(info.value, "__notes__", []))
