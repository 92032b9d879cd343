"""The parallel strategy a launch gets, the single process's collectives as identities, and the update's TrainConfig
built from the config's sections (the DDP and FSDP2 strategies run for real in tests/distributed/)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from tao_engine.distributed.context import DistributedContext
from tao_engine.distributed.main_rank import NullMetricsLog
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.metrics_log import MetricsLog
from tao_engine.rl.optim import OptimConfig
from tao_engine.rl.parallel_strategy import DataParallel, FullySharded, SingleProcess, strategy_for
from tao_engine.rl.tao_builder import train_config
from tao_engine.rl.tao_config import RunSection, TAOConfig, TrainSection
from tao_engine.rl.trainer import TrainConfig


def _ctx(rank: int, strategy: str) -> DistributedContext:
    return DistributedContext(rank, 2, rank, "gloo", "cpu", strategy)


def test_the_launch_picks_the_strategy_and_rank_0_writes():
    assert type(strategy_for(None)) is SingleProcess
    assert type(strategy_for(_ctx(0, "ddp"))) is DataParallel
    assert type(strategy_for(_ctx(1, "fsdp2"))) is FullySharded
    assert [strategy_for(_ctx(r, "ddp")).writes_outputs for r in (0, 1)] == [True, False]
    assert not strategy_for(_ctx(0, "fsdp2")).decides_alone
    assert strategy_for(None).decides_alone and strategy_for(None).data_parallel is None
    assert strategy_for(_ctx(0, "fsdp2")).placement() is not None and strategy_for(None).placement() is None


def test_a_single_process_keeps_everything_as_it_is(tmp_path):
    strategy = SingleProcess()
    model = nn.Linear(3, 2)
    reference = strategy.place(model, needs_reference=True)
    assert reference is not model and all(not p.requires_grad for p in reference.parameters())
    assert torch.equal(reference.weight, model.weight)
    assert strategy.place(model, needs_reference=False) is None
    assert strategy.rollout(model, torch.Generator(), [4, 2], None, lambda mine: mine) == [4, 2]
    assert strategy.total(3, "count") == 3
    assert strategy.first_stop("why") == "why" and strategy.first_stop(None) is None
    metrics = {"loss": 1.0}
    assert strategy.reduce_metrics(metrics) is metrics
    with strategy.full_weights(model, "eval") as full:
        assert full is model
    assert strategy.full_state(model, None, "final model") == (None, None)
    assert strategy.guarded(lambda: 7, "run") == 7
    log = strategy.metrics_log(tmp_path)
    assert isinstance(log, MetricsLog)
    log.close()
    assert isinstance(DataParallel(_ctx(1, "ddp")).metrics_log(tmp_path / "other"), NullMetricsLog)


def test_train_config_takes_the_train_section_field_by_field():
    train = TrainSection(loss_temperature=0.7, shared_prompt=False, max_tokens_per_forward=123,
                         gradient_checkpointing=False, bf16_autocast=False)
    algorithm = AlgorithmConfig(kl_coef=0.1)
    config = TAOConfig(train=train, algorithm=algorithm, optim=OptimConfig(max_grad_norm=0.5), run=RunSection(seed=9))
    built = train_config(config)
    assert built == TrainConfig(algorithm=algorithm, loss_temperature=0.7, shared_prompt=False,
                                max_tokens_per_forward=123, gradient_checkpointing=False, bf16_autocast=False,
                                max_grad_norm=0.5, seed=9)
    assert built.algorithm is algorithm
    assert {f.name for f in dataclasses.fields(TrainSection)} < {f.name for f in dataclasses.fields(TrainConfig)}
