"""The `[distributed]` config section, the context read from torchrun's environment, and the metrics reduction."""

from __future__ import annotations

import math

import pytest

from tao_engine.distributed.config import DistributedSection
from tao_engine.distributed.context import DistributedContext
from tao_engine.distributed.reduce import combine_metrics
from tao_engine.rl.tao_config import TAOConfig

TORCHRUN_ENV = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}


def test_tao_config_reads_and_checks_the_distributed_section():
    cfg = TAOConfig.from_dict({"distributed": {"strategy": "ddp", "backend": "gloo", "timeout_s": 30}})
    assert cfg.distributed == DistributedSection("ddp", "gloo", 30)
    assert TAOConfig().distributed == DistributedSection()
    assert TAOConfig.from_dict(cfg.to_dict()).distributed == cfg.distributed
    with pytest.raises(ValueError, match=r"tao config \[distributed\].*unknown key\(s\) \['nodes'\]"):
        TAOConfig.from_dict({"distributed": {"nodes": 2}})
    with pytest.raises(ValueError, match="strategy must be one of"):
        DistributedSection(strategy="zero3")
    with pytest.raises(ValueError, match="backend must be one of"):
        DistributedSection(backend="mpi")
    with pytest.raises(ValueError, match="timeout_s must be a number of seconds > 0"):
        DistributedSection(timeout_s=0)


def test_context_from_torchrun_environment():
    assert DistributedContext.from_env(env={}) is None  # a plain process: single-process behaviour
    ctx = DistributedContext.from_env(DistributedSection(backend="gloo", timeout_s=12), env=TORCHRUN_ENV)
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.backend, ctx.device) == (3, 4, 1, "gloo", "cpu")
    assert ctx.timeout_s == 12 and not ctx.is_main
    auto = DistributedContext.from_env(env={**TORCHRUN_ENV, "RANK": "0"})
    assert auto.is_main and auto.backend in ("gloo", "nccl")


def test_context_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"\['MASTER_PORT'\] are not; launch with torchrun"):
        DistributedContext.from_env(env={k: v for k, v in TORCHRUN_ENV.items() if k != "MASTER_PORT"})
    with pytest.raises(ValueError, match="RANK='x' is not an integer"):
        DistributedContext.from_env(env={**TORCHRUN_ENV, "RANK": "x"})
    with pytest.raises(ValueError, match=r"rank 4 is not in \[0, world_size=4\)"):
        DistributedContext.from_env(env={**TORCHRUN_ENV, "RANK": "4"})
    sharded = DistributedContext.from_env(DistributedSection(strategy="fsdp2", backend="gloo"), env=TORCHRUN_ENV)
    assert sharded.strategy == "fsdp2"


def test_metrics_combine_counts_times_and_means():
    ranks = [
        {"reward_mean": 0.5, "generated_tokens": 40, "train_s": 1.5, "peak_memory_mb": 10.0, "clip_fraction": 0.1,
         "optimizer_steps": 1, "note": "a", "kl": math.nan},
        {"reward_mean": 0.5, "generated_tokens": 24, "train_s": 2.5, "peak_memory_mb": 30.0, "clip_fraction": 0.3,
         "optimizer_steps": 1, "note": "b", "kl": 0.2, "entropy": 1.0},
    ]
    out = combine_metrics(ranks)
    assert out["reward_mean"] == 0.5  # computed from the gathered batch: equal on every rank
    assert out["generated_tokens"] == 64 and isinstance(out["generated_tokens"], int)
    assert out["train_s"] == 2.5 and out["peak_memory_mb"] == 30.0  # the slowest rank / the largest
    assert out["clip_fraction"] == pytest.approx(0.2)
    assert out["optimizer_steps"] == 1 and isinstance(out["optimizer_steps"], int)
    assert out["note"] == "a"
    assert out["kl"] == pytest.approx(0.2)  # a rank that measured nothing (NaN) does not drag the mean
    assert out["entropy"] == 1.0
    assert list(out)[:3] == ["reward_mean", "generated_tokens", "train_s"]
