"""The tiny TAO run the distributed tests compare: the same config, model, prompts and scorer in one process
(in the test) and in every rank (tests/distributed/tao_worker.py)."""

from __future__ import annotations

import torch

from tao_engine.distributed.config import DistributedSection
from tao_engine.engine import EngineConfig, SamplingParams
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.lora import LoraConfig
from tao_engine.rl.optim import OptimConfig
from tao_engine.rl.tao_config import DataSection, RunSection, TAOConfig, TrainSection
from tests import helpers

VOCAB = 101
LOW = 50  # the toy reward: the fraction of a candidate's tokens below LOW (about half, so groups vary)
RARE = 4  # the rare reward: 1 when a candidate holds a token below RARE; often a whole group scores 0 (DAPO refills)
PROMPTS = [[3, 14, 15, 92], [65, 35], [89, 79, 32, 38, 46], [26, 43], [11, 12, 13], [50, 60, 70, 80, 90, 99],
           [5, 6, 7, 8], [21, 22]]


class ToyScorer:
    """Fraction of low token ids in each candidate; raises on every call when `fail` is set (a broken rank)."""

    name = "low_tokens"

    def __init__(self, fail: bool = False, rare: bool = False) -> None:
        self.fail = fail
        self.rare = rare

    def score_groups(self, prompts, groups, completion_token_ids=None, **context):
        if self.fail:
            raise ValueError("injected scorer failure")
        if self.rare:
            return [[float(any(t < RARE for t in c)) for c in group] for group in completion_token_ids]
        return [[sum(t < LOW for t in c) / max(1, len(c)) for c in group] for group in completion_token_ids]


def scorer(fail: bool = False, rare: bool = False):
    from tao_engine.scoring.composite import CompositeScorer, WeightedScorer

    return CompositeScorer([WeightedScorer(ToyScorer(fail, rare))])


def config(run_dir, steps: int = 2, algorithm: str = "grpo", max_tokens_per_forward: int = 64,
           strategy: str = "ddp", lora: bool = False, kl_coef: float = 0.0, backend: str = "gloo",
           device: str = "cpu") -> TAOConfig:
    """lora: adapters of rank 4 on every projection; kl_coef > 0: a k3 KL to the reference in the loss (the base
    weights under LoRA, else a frozen copy); backend "nccl" with device "cuda" for the GPU variant."""
    return TAOConfig(
        sampling=SamplingParams(n=4, temperature=1.0, max_tokens=5, ignore_eos=True),
        algorithm=AlgorithmConfig(name=algorithm, kl_coef=kl_coef, kl_type="k3"),
        lora=LoraConfig(r=4, alpha=8.0) if lora else None,
        optim=OptimConfig(lr=1e-2, eps=1e-4),  # eps bounds AdamW's sensitivity to gradient rounding
        train=TrainSection(max_tokens_per_forward=max_tokens_per_forward),
        engine=EngineConfig(kv_cache_bytes=4 * 2**20, block_size=4, device=device),
        run=RunSection(steps=steps, output_dir=str(run_dir), checkpoint_every=1, keep_last=5, seed=3),
        data=DataSection(prompts_per_step=4),
        distributed=DistributedSection(strategy=strategy, backend=backend, timeout_s=900),  # > the tests' timeouts
    )


def model(device: str = "cpu") -> torch.nn.Module:
    return helpers.tiny_model(0, eos_token_id=VOCAB - 1).train().to(device)
