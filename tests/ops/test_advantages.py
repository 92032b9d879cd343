"""group_advantages: every backend (torch reference, `cpp` csrc/cpu/advantages.cpp, `triton` kernels/advantages.py)
against a plain-math fp64 implementation (tests/ops/rl_plain_math.py), every mode, NaN rewards, ties, zero-variance
groups, several blocks of groups; opcheck; errors."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.advantages import ADVANTAGE_MODES
from tao_engine.ops.extension import load_extension
from tao_engine.ops.registry import BackendUnavailableError, all_ops
from tests.error_bounds import assert_within_bound
from tests.ops.conftest import backends
from tests.ops.rl_plain_math import plain_group_advantages
from tests.tolerances import bound, check

NAN = float("nan")
BACKENDS = backends("torch", "cpp", "triton")
# (P, n): one group, odd group sizes, and P large enough for several Triton program blocks (2048 rewards each).
SHAPES = [(1, 1), (1, 7), (7, 2), (7, 3), (33, 8), (129, 5), (129, 16), (9, 300)]


def _rewards(groups: int, n: int, seed: int, kind: str, device: torch.device | None = None) -> torch.Tensor:
    """Random rewards of the kinds a verifier gives: continuous scores, or binary 0/1 (many ties and all-equal
    groups), with some NaN (no reward) entries."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "binary":
        rewards = torch.randint(0, 2, (groups, n), generator=gen).float()
    else:
        rewards = torch.randn(groups, n, generator=gen) * 2.0 + 0.5
    rewards[torch.rand(groups, n, generator=gen) < 0.15] = NAN
    return rewards.to(device)


def _check(rewards: torch.Tensor, mode: str, backend: str, eps: float = 1e-6) -> torch.Tensor:
    advantages, zero_variance = ops.group_advantages(rewards, mode, eps, backend=backend)
    expected, expected_zv = plain_group_advantages(rewards.cpu(), mode, eps)
    assert advantages.dtype == torch.float32 and advantages.shape == rewards.shape and advantages.is_contiguous()
    assert zero_variance.dtype == torch.bool and zero_variance.tolist() == expected_zv
    check("group_advantages", advantages, torch.tensor(expected, dtype=torch.float64).reshape(rewards.shape),
          rewards=rewards, mode=mode, eps=eps)
    assert not advantages.requires_grad
    return advantages


@pytest.mark.parametrize(("kind", "eps"), [("continuous", 1e-6), ("binary", 1e-6), ("binary", 0.1)])
@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
@pytest.mark.parametrize(("groups", "n"), SHAPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_plain_math(backend, device, groups, n, mode, kind, eps):
    _check(_rewards(groups, n, seed=groups * 31 + n, kind=kind, device=device), mode, backend, eps)


@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_ties_and_zero_variance_groups(backend, device, mode):
    rewards = torch.tensor(
        [
            [1.0, 0.0, 1.0, 0.0],  # ties, nonzero variance
            [0.7, 0.7, 0.7, 0.7],  # all equal: zero variance
            [NAN, NAN, NAN, NAN],  # no reward at all
            [NAN, 2.5, NAN, NAN],  # a single valid reward
            [3.0, NAN, 3.0, NAN],  # two equal valid rewards
            [0.1, 0.1, 0.1, 0.2],  # fp rounding of the mean must not make [0.1]*3 nonzero
            [NAN, -1.0, 4.0, NAN],  # two valid, different
        ],
        device=device,
    )
    advantages = _check(rewards, mode, backend)
    zero_variance = ops.group_advantages(rewards, mode, backend=backend)[1]
    assert zero_variance.tolist() == [False, True, True, True, True, False, False]
    assert (advantages[torch.isnan(rewards)] == 0).all(), "NaN rewards must get advantage exactly 0"
    if mode == "none":  # the rewards themselves, exactly
        assert torch.equal(advantages[1], rewards[1]) and advantages[3, 1].item() == 2.5
    else:
        assert (advantages[zero_variance] == 0).all(), "zero-variance groups must get advantages exactly 0"
        assert advantages[5, 3] > 0 and (advantages[5, :3] < 0).all()


@pytest.mark.parametrize("backend", backends("torch", "cpp"))
def test_mode_invariants(backend):
    rewards = _rewards(33, 8, seed=3, kind="continuous")
    valid = ~torch.isnan(rewards)
    # Each invariant holds exactly in real arithmetic; the fp32 outputs move it by at most their own bounds.
    mean = ops.group_advantages(rewards, "mean", backend=backend)[0]
    mean_bound = bound("group_advantages", rewards=rewards, mode="mean")
    # centered per group: the exact values sum to 0, each output is within its bound, the fp64 sum adds nothing
    assert_within_bound(mean.double().sum(-1), torch.zeros(33, dtype=torch.float64), mean_bound.sum(-1), "sum")
    std = ops.group_advantages(rewards, "mean_std", eps=0.0, backend=backend)[0]
    std_bound = bound("group_advantages", rewards=rewards, mode="mean_std", eps=0.0)
    for p in range(33):
        group, group_bound = std[p][valid[p]].double(), std_bound[p][valid[p]]
        if group.numel() >= 2:  # unit sample std; moving each value by b moves the std by at most ||b|| / sqrt(k - 1)
            limit = group_bound.norm() / (group.numel() - 1) ** 0.5
            assert_within_bound(group.std(), torch.tensor(1.0, dtype=torch.float64), limit, "unit std")
    batch = ops.group_advantages(rewards, "mean_batch_std", eps=0.0, backend=backend)[0]
    batch_bound = bound("group_advantages", rewards=rewards, mode="mean_batch_std", eps=0.0)[valid]
    limit = batch_bound.norm() / (int(valid.sum()) - 1) ** 0.5
    assert_within_bound(batch[valid].double().std(), torch.tensor(1.0, dtype=torch.float64), limit, "unit batch std")
    loo = ops.group_advantages(rewards, "leave_one_out", backend=backend)[0]
    counts = valid.sum(-1, keepdim=True).double()
    factor = counts / (counts - 1).clamp(min=1)
    limit = bound("group_advantages", rewards=rewards, mode="leave_one_out") + mean_bound * factor
    assert_within_bound(loo.double(), mean.double() * factor, limit, "leave-one-out = mean k / (k - 1)")


@pytest.mark.parametrize("backend", BACKENDS)
def test_eps_and_input_layouts(backend, device):
    rewards = _rewards(9, 6, seed=4, kind="continuous", device=device)
    _check(rewards, "mean_std", backend, eps=0.5)
    _check(rewards, "mean_batch_std", backend, eps=0.25)
    _check(rewards.t().contiguous().t(), "mean_std", backend)  # column-major: read through strides
    _check(rewards.double(), "leave_one_out", backend)  # fp64 rewards
    _check(rewards.double(), "mean_batch_std", backend)
    _check(rewards.to(torch.bfloat16), "mean_std", backend)  # low-precision rewards are widened
    _check(torch.empty(0, 4, device=device), "mean_std", backend)
    _check(torch.empty(0, 5, device=device), "mean", backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_names_the_field(backend, device):
    rewards = torch.randn(3, 4, device=device)
    with pytest.raises(ValueError, match="mode must be one of"):
        ops.group_advantages(rewards, "grpo", backend=backend)
    with pytest.raises(ValueError, match=r"rewards must be a 2-D \[P, n\] tensor"):
        ops.group_advantages(rewards[0], backend=backend)
    with pytest.raises(ValueError, match="rewards must be a floating-point tensor"):
        ops.group_advantages(torch.ones(3, 4, dtype=torch.long, device=device), backend=backend)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        ops.group_advantages(rewards, eps=-1.0, backend=backend)


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_refuses_groups_past_its_block(backend, device):
    with pytest.raises(BackendUnavailableError, match="groups of more than"):
        ops.group_advantages(torch.zeros(1, 8193, device=device), backend=backend)


@pytest.mark.ext
def test_compiled_op_checks_and_opcheck():
    load_extension()
    op = torch.ops.tao_engine.group_advantages
    rewards = _rewards(7, 5, seed=5, kind="binary")
    for mode in ADVANTAGE_MODES:
        torch.library.opcheck(op.default, (rewards, mode, 1e-6))
    with pytest.raises(ValueError, match="mode must be one of"):
        op(rewards, "bogus", 1e-6)
    with pytest.raises(ValueError, match="rewards must be float32 or float64"):
        op(rewards.half(), "mean", 1e-6)
    with pytest.raises(ValueError, match="eps must be a finite number"):
        op(rewards, "mean", float("nan"))
    assert all_ops()["group_advantages"].describe("cpu") == "cpp"
