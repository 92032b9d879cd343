"""The `triton` backend of group_advantages (kernels/advantages.py) against the plain-math fp64 implementation
(tests/ops/rl_plain_math.py): every mode, NaN rewards, ties, zero-variance groups, several blocks of groups."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.advantages import ADVANTAGE_MODES
from tao_engine.ops.registry import BackendUnavailableError
from tests.ops.rl_plain_math import plain_group_advantages
from tests.tolerances import check

pytestmark = pytest.mark.triton

NAN = float("nan")


def _rewards(groups: int, n: int, seed: int, binary: bool, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if binary:
        rewards = torch.randint(0, 2, (groups, n), generator=gen).float()
    else:
        rewards = torch.randn(groups, n, generator=gen) * 2.0 + 0.5
    rewards[torch.rand(groups, n, generator=gen) < 0.15] = NAN
    return rewards.to(device)


def _check(rewards: torch.Tensor, mode: str, eps: float = 1e-6) -> torch.Tensor:
    advantages, zero_variance = ops.group_advantages(rewards, mode, eps, backend="triton")
    expected, expected_zv = plain_group_advantages(rewards.cpu(), mode, eps)
    assert advantages.dtype == torch.float32 and advantages.shape == rewards.shape
    assert zero_variance.dtype == torch.bool and zero_variance.tolist() == expected_zv
    expected = torch.tensor(expected, dtype=torch.float64).reshape(rewards.shape)
    check("group_advantages", advantages, expected, rewards=rewards, mode=mode, eps=eps)
    return advantages


# (P, n): one group, odd group sizes, and P large enough for several program blocks (2048 rewards per program).
@pytest.mark.parametrize(("groups", "n"), [(1, 1), (7, 3), (129, 16), (9, 300)])
@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
def test_matches_plain_math(triton_device, mode, groups, n):
    _check(_rewards(groups, n, seed=groups + n, binary=False, device=triton_device), mode)
    _check(_rewards(groups, n, seed=groups * n, binary=True, device=triton_device), mode, eps=0.1)


@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
def test_nan_ties_and_zero_variance_groups(triton_device, mode):
    rewards = torch.tensor(
        [
            [1.0, 0.0, 1.0, 0.0],
            [0.7, 0.7, 0.7, 0.7],
            [NAN, NAN, NAN, NAN],
            [NAN, 2.5, NAN, NAN],
            [0.1, 0.1, 0.1, 0.2],
        ],
        device=triton_device,
    )
    advantages = _check(rewards, mode)
    assert (advantages[torch.isnan(rewards)] == 0).all()
    if mode != "none":
        assert (advantages[1:4] == 0).all()


def test_strided_and_wide_dtype_rewards(triton_device):
    rewards = _rewards(33, 7, seed=1, binary=False, device=triton_device)
    _check(rewards.t().contiguous().t(), "mean_std")
    _check(rewards.double(), "mean_batch_std")
    _check(torch.empty(0, 5, device=triton_device), "mean")


def test_errors(triton_device):
    with pytest.raises(ValueError, match="mode must be one of"):
        ops.group_advantages(torch.zeros(2, 3, device=triton_device), "rloo", backend="triton")
    with pytest.raises(BackendUnavailableError, match="groups of more than"):
        ops.group_advantages(torch.zeros(1, 8193, device=triton_device), backend="triton")
