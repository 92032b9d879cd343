"""The `triton` backend of policy_loss (kernels/policy_loss.py) against the plain-math fp64 implementation and its
finite-difference gradients (tests/ops/rl_plain_math.py), for the option cases of tests/ops/policy_loss_cases.py."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.policy_loss_args import LOSS_AGGS
from tests.ops.policy_loss_cases import CASES, METRICS, case_options, check_against_plain, make_inputs, run_backend
from tests.ops.rl_plain_math import plain_policy_loss
from tests.tolerances import check

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("case", CASES)
def test_matches_plain_math(triton_device, case):
    inputs, options = case_options(case)
    check_against_plain(make_inputs(5, 7, seed=case["seed"], device=triton_device, **inputs), "triton", **options)


@pytest.mark.parametrize(("batch", "time"), [(1, 1), (7, 33), (3, 1500)])  # 1500 > one 1024-token chunk
def test_odd_shapes(triton_device, batch, time):
    inputs = make_inputs(batch, time, seed=batch + time, weights=True, device=triton_device)
    check_against_plain(inputs, "triton", with_grad=batch * time <= 300, kl_coef=0.1, dual_clip=3.0)
    check_against_plain(inputs, "triton", with_grad=False, ratio_level="sequence", loss_agg="seq_mean_token_mean")


def test_matches_cpu_reference_with_strided_inputs(triton_device):
    inputs = make_inputs(6, 9, seed=4, per_token_adv=True, weights=True, float_mask=True, device=triton_device)
    strided = {k: v.t().contiguous().t() if v is not None else None for k, v in inputs.items()}
    options = dict(kl_coef=0.2, kl_type="k2", loss_agg="seq_mean_token_sum")
    expected, expected_grad = run_backend(inputs, "torch", **options)
    got, grad = run_backend(strided, "triton", **options)
    plain = plain_policy_loss(**inputs, **options)
    for loss, g in ((got.loss, grad), (expected.loss, expected_grad)):  # each fp32 backend against fp64 math
        check("policy_loss", loss, torch.tensor(plain["loss"], dtype=torch.float64), **inputs, **options)
        check("policy_loss_grad", g, plain["grad"], **inputs, **options)


def test_empty_and_no_grad(triton_device):
    inputs = make_inputs(3, 5, seed=6, device=triton_device)
    inputs["mask"] = torch.zeros(3, 5, dtype=torch.bool, device=triton_device)
    for loss_agg in LOSS_AGGS:
        out, grad = run_backend(inputs, "triton", loss_agg=loss_agg, max_tokens=4, kl_coef=0.1)
        assert out.loss.item() == 0.0 and (grad == 0).all()
        assert all(getattr(out, name).item() == 0.0 for name in METRICS)
    inputs = make_inputs(4, 6, seed=7, device=triton_device)
    with torch.no_grad():
        out = ops.policy_loss(**inputs, backend="triton")
    assert not out.loss.requires_grad
    plain = torch.tensor(plain_policy_loss(**inputs, with_grad=False)["loss"], dtype=torch.float64)
    for loss in (out.loss, ops.policy_loss(**inputs, backend="torch").loss):
        check("policy_loss", loss, plain, **inputs)
    with pytest.raises(ValueError, match="ref_logprobs is None"):
        ops.policy_loss(**{**inputs, "ref_logprobs": None}, kl_coef=0.1, backend="triton")
