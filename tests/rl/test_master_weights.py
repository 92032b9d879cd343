"""fp32 master weights of a bf16 model's trainable parameters (tao_engine/rl/master_weights.py, built by
build_optimizer): updates far below bf16's resolution still accumulate, gradients accumulate in fp32, the module
holds the masters rounded after every step (the engine's next generation sees them), a skipped step changes nothing,
and the optimizer's state dict carries the masters so a resume is exact."""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.optim import GuardedStep, OptimConfig, build_optimizer
from tao_engine.rl.rollouts import rollout
from tao_engine.rl.trainer import TrainConfig, train_step
from tests import helpers


def _net(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 3)).to(dtype)


def _loss(net: nn.Module, seed: int) -> torch.Tensor:
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(seed)).to(next(net.parameters()).dtype)
    return net(x).float().square().mean()


def test_updates_below_bf16_resolution_accumulate_in_the_masters():
    net = _net(torch.bfloat16)
    start = [p.detach().clone() for p in net.parameters()]
    optimizer = build_optimizer(net, OptimConfig(lr=1e-5))  # each step moves a weight ~1e-5: below bf16's 2^-8
    masters = [p for g in optimizer.param_groups for p in g["params"]]
    assert all(m.dtype == torch.float32 for m in masters) and not any(m is p for m in masters for p in start)
    for step in range(300):
        _loss(net, step).backward()
        assert all(p.grad is None for p in net.parameters())  # moved into the fp32 masters
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    by_shape = {tuple(m.shape): m for m in masters}
    moved = 0
    for p, p0 in zip(net.parameters(), start, strict=True):
        master = by_shape[tuple(p.shape)]
        assert torch.equal(p, master.detach().to(torch.bfloat16))  # the module holds the masters, rounded
        moved += int((p != p0).sum())
    assert moved > 0  # ~3e-3 accumulated: visible in bf16, although no single step was


def test_gradients_accumulate_in_fp32_and_match_an_fp32_model():
    low, full = _net(torch.bfloat16), _net(torch.float32)
    with torch.no_grad():
        for a, b in zip(low.parameters(), full.parameters(), strict=True):
            b.copy_(a.float())  # the same (bf16-representable) starting point
    opt_low = build_optimizer(low, OptimConfig(lr=1e-3))
    opt_full = build_optimizer(full, OptimConfig(lr=1e-3))
    for seed in (1, 2):  # two micro-batches accumulate before the step
        _loss(low, seed).backward()
        _loss(full, seed).backward()
    masters = [p for g in opt_low.param_groups for p in g["params"]]
    reference = [p for g in opt_full.param_groups for p in g["params"]]
    for m, r in zip(masters, reference, strict=True):
        assert m.grad.dtype == torch.float32
        torch.testing.assert_close(m.grad, r.grad, atol=0.05 * r.grad.abs().max().item(), rtol=0.05)  # bf16 forward
    opt_low.step()
    opt_full.step()
    for m, r in zip(masters, reference, strict=True):
        torch.testing.assert_close(m, r, atol=1e-2, rtol=0)  # the step itself in fp32 on both sides


def test_a_skipped_step_and_a_resumed_state_are_exact():
    net = _net(torch.bfloat16)
    optimizer = build_optimizer(net, OptimConfig(lr=1e-4))
    guarded = GuardedStep(optimizer, max_grad_norm=1.0)
    _loss(net, 0).backward()
    assert guarded(1.0).applied
    before = [p.detach().clone() for p in net.parameters()]
    _loss(net, 1).backward()
    assert not guarded(float("nan")).applied  # skipped: weights and masters untouched
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before, strict=True))
    state = copy.deepcopy(optimizer.state_dict())  # as a checkpoint file holds it, apart from the live tensors
    saved = [t.clone() for t in state["fp32_master_weights"]]
    # A fresh model and optimizer (as a resumed run builds them) take the exact fp32 masters back.
    again = _net(torch.bfloat16)
    again.load_state_dict(net.state_dict())
    opt_again = build_optimizer(again, OptimConfig(lr=1e-4))
    opt_again.load_state_dict(state)
    restored = [p for g in opt_again.param_groups for p in g["params"]]
    assert all(torch.equal(r, s) for r, s in zip(restored, saved, strict=True))
    for opt, model, seed in ((optimizer, net, 5), (opt_again, again, 5)):
        _loss(model, seed).backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters(), strict=True))


def test_fp32_parameters_are_their_own_masters():
    net = _net(torch.float32)
    optimizer = build_optimizer(net, OptimConfig(lr=1e-3))
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in net.parameters()}
    assert "fp32_master_weights" in optimizer.state_dict() and optimizer.state_dict()["fp32_master_weights"] == []


def test_a_bf16_policy_trains_and_the_engine_sees_the_update():
    model = helpers.tiny_model(0, eos_token_id=100).to(torch.bfloat16).train()
    engine = Engine(model, EngineConfig(kv_cache_bytes=8 * 2**20, block_size=4))
    sampling = SamplingParams(n=4, temperature=1.0, max_tokens=5, ignore_eos=True, seed=3)
    ro = rollout(engine, [[3, 14, 15], [65, 35]], sampling)
    gen = torch.Generator().manual_seed(0)
    ro = dataclasses.replace(ro, rewards=torch.rand(ro.num_prompts, ro.n, generator=gen).tolist())
    probe = SamplingParams(n=2, temperature=1.0, max_tokens=3, ignore_eos=True, seed=9)
    before = engine.generate([[3, 14, 15]], probe)[0].samples[0].raw_logprobs
    optimizer = build_optimizer(model, OptimConfig(lr=1e-2))
    stats = train_step(model, ro, optimizer, TrainConfig(AlgorithmConfig(name="grpo"), max_tokens_per_forward=64))
    assert stats.optimizer_steps == 1 and "sampler_trainer_gap" in stats.as_dict()  # the gap stays logged
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    after = engine.generate([[3, 14, 15]], probe)[0].samples[0].raw_logprobs
    assert before != after
