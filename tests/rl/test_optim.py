"""Optimizer config, parameter groups, LR schedules against plain math, and the NaN/inf guard of the step."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from tao_engine.rl.optim import GuardedStep, OptimConfig, build_optimizer, build_scheduler
from tests.tolerances import check


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(5, 7)
        self.norm = nn.LayerNorm(7)
        self.head = nn.Linear(7, 3, bias=False)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.head(self.norm(self.proj(x))))


def loss_of(net: Net, seed: int) -> torch.Tensor:
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(seed))
    return net(x).square().mean()


@pytest.mark.parametrize("bad", [
    {"lr": 0.0}, {"lr": float("inf")}, {"betas": (0.9,)}, {"betas": (0.9, 1.0)}, {"weight_decay": -1.0},
    {"eps": 0.0}, {"warmup_steps": -1}, {"warmup_steps": 1.5}, {"schedule": "step"}, {"min_lr_ratio": 1.5},
    {"max_grad_norm": 0.0}, {"lr": True},
])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError, match="OptimConfig"):
        OptimConfig(**bad)


def test_config_from_dict() -> None:
    cfg = OptimConfig.from_dict({"lr": 3e-4, "betas": [0.9, 0.95], "max_grad_norm": None, "schedule": "cosine"})
    assert cfg.betas == (0.9, 0.95) and cfg.max_grad_norm is None
    with pytest.raises(ValueError, match="unknown key"):
        OptimConfig.from_dict({"learning_rate": 1e-3})


def test_groups_exclude_norms_biases_and_frozen() -> None:
    net = Net()
    opt = build_optimizer(net, OptimConfig(lr=1e-3, weight_decay=0.1))
    groups = {g["name"]: (g["weight_decay"], {id(p) for p in g["params"]}) for g in opt.param_groups}
    assert groups["decay"] == (0.1, {id(net.proj.weight), id(net.head.weight)})
    assert groups["no_decay"] == (0.0, {id(net.proj.bias), id(net.norm.weight), id(net.norm.bias)})
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False), OptimConfig())


def reference_multiplier(schedule: str, step: int, warmup: int, total: int, floor: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / (total - warmup))
    decay = 1 - progress if schedule == "linear" else (1 + math.cos(math.pi * progress)) / 2
    return floor + (1 - floor) * decay


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_schedule_matches_plain_math(schedule: str) -> None:
    cfg = OptimConfig(lr=0.5, warmup_steps=3, schedule=schedule, min_lr_ratio=0.1)
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    sched = build_scheduler(opt, cfg, total_steps=11)
    seen = []
    for _ in range(13):  # past the end: the floor holds
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.5 * reference_multiplier(schedule, s, 3, 11, 0.1) for s in range(13)]
    assert seen == pytest.approx(expected, rel=1e-12)
    if schedule != "constant":
        assert seen[3] == pytest.approx(0.5) and seen[11] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="warmup_steps"):
        build_scheduler(opt, OptimConfig(warmup_steps=5, schedule="cosine"), total_steps=5)


def test_applied_step_clips_like_torch() -> None:
    net, twin = Net(), Net()
    cfg = OptimConfig(lr=1e-2, weight_decay=0.01, max_grad_norm=0.05, schedule="linear")
    opt, twin_opt = build_optimizer(net, cfg), build_optimizer(twin, cfg)
    guard = GuardedStep.from_config(opt, build_scheduler(opt, cfg, 4), cfg)
    twin_sched = build_scheduler(twin_opt, cfg, 4)
    for step in range(3):
        loss = loss_of(net, step)
        loss.backward()
        loss_of(twin, step).backward()
        # the guard sums the norm over the optimizer's parameter order: use the same order for bit-equality
        expected_norm = torch.nn.utils.clip_grad_norm_([p for g in twin_opt.param_groups for p in g["params"]], 0.05)
        twin_opt.step()
        twin_sched.step()
        twin_opt.zero_grad()
        result = guard(loss)
        assert result.applied and result.skip_reason is None
        assert result.grad_norm == float(expected_norm) and result.grad_norm > 0.05
        assert all(p.grad is None for p in net.parameters())
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    assert guard.state_dict() == {"applied_steps": 3, "skipped_steps": 0}


@pytest.mark.parametrize("poison", ["nan_grad", "inf_grad", "nan_loss"])
def test_skipped_step_leaves_weights_and_state_bit_identical(poison: str) -> None:
    net = Net()
    cfg = OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=1, schedule="cosine")
    opt = build_optimizer(net, cfg)
    sched = build_scheduler(opt, cfg, 10)
    guard = GuardedStep.from_config(opt, sched, cfg)
    loss = loss_of(net, 0)
    loss.backward()
    assert guard(loss).applied  # the optimizer now has state worth protecting
    weights = copy.deepcopy(net.state_dict())
    opt_state, sched_state = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())

    loss = loss_of(net, 1)
    if poison == "nan_loss":
        loss = loss * float("nan")
    loss.backward()
    if poison != "nan_loss":
        net.head.weight.grad[0, 0] = float("nan") if poison == "nan_grad" else float("inf")
    result = guard(loss)
    assert not result.applied and ("loss" if poison == "nan_loss" else "grad norm") in result.skip_reason
    assert guard.skipped_steps == 1 and guard.applied_steps == 1
    assert all(p.grad is None for p in net.parameters())
    for name, value in net.state_dict().items():
        assert torch.equal(value, weights[name]), name
    after = opt.state_dict()
    assert after["param_groups"] == opt_state["param_groups"]
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            assert torch.equal(after["state"][index][key], value), (index, key)
    assert sched.state_dict() == sched_state

    loss = loss_of(net, 2)  # training goes on normally afterwards
    loss.backward()
    assert guard(loss).applied and not torch.equal(net.head.weight, weights["head.weight"])


def test_grad_scaler_overflow_backs_off_scale_and_skips() -> None:
    net = Net()
    opt = build_optimizer(net, OptimConfig(lr=1e-2))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    guard = GuardedStep(opt, max_grad_norm=1.0, scaler=scaler)
    loss = loss_of(net, 0)
    scaler.scale(loss).backward()
    net.proj.weight.grad[0, 0] = float("inf")
    weights = copy.deepcopy(net.state_dict())
    assert not guard(loss).applied
    assert scaler.get_scale() == 2.0**9
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())
    loss = loss_of(net, 1)
    scaler.scale(loss).backward()
    grads = [p.grad.clone() / scaler.get_scale() for p in net.parameters() if p.requires_grad]
    result = guard(loss)
    assert result.applied
    # Two fp32 2-norms of the same gradients (one of them unscaled first), each within the norm's bound of exact.
    exact = torch.cat([g.double().reshape(-1) for g in grads]).norm()
    check("vector_norm", torch.tensor(result.grad_norm), exact, tensors=grads)
    check("vector_norm", torch.nn.utils.get_total_norm(grads), exact, tensors=grads)
