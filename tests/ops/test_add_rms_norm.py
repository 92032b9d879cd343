"""add_rms_norm (tao_engine/ops/add_rms_norm.py): the residual add fused into the norm, on every CPU backend against
fp64: both outputs, gradients through both (the sum feeds the next layer's residual), half dtypes with the sum
rounded as the model's residual stream holds it (bit for bit as torch adds), bounds from the suite's table
(tests/tolerances.py); the cpp op's registrations (opcheck)."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.extension import load_extension
from tao_engine.ops.rms_norm import rms_norm_reference
from tests.error_bounds import assert_within_bound, rounding
from tests.ops.conftest import backends
from tests.tolerances import check, tolerance

EPS = 1e-5
DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32)]
IDS = ["fp32", "bf16", "bf16-fp32w"]


@pytest.fixture(params=backends("torch", "cpp"))
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _inputs(shape, x_dtype, w_dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).to(x_dtype)
    residual = (torch.randn(shape, generator=gen) * 3).to(x_dtype)
    weight = (1 + 0.3 * torch.randn(shape[-1], generator=gen)).to(w_dtype)
    return x, residual, weight


@pytest.mark.parametrize("dtypes", DTYPES, ids=IDS)
@pytest.mark.parametrize("shape", [(1, 4099), (7, 129), (129, 7), (2, 3, 576)])
def test_forward_matches_fp64(backend, shape, dtypes):
    x, residual, weight = _inputs(shape, *dtypes, seed=sum(shape))
    out, summed = ops.add_rms_norm(x, residual, weight, EPS, backend=backend)
    _check_outputs(x, residual, weight, out, summed)


def _check_outputs(x, residual, weight, out, summed):
    # The sum is rounded once into x's dtype, exactly as torch's own add rounds it; the norm is of that sum.
    assert summed.dtype == x.dtype and summed.shape == x.shape
    assert torch.equal(summed, x + residual)
    assert out.dtype == torch.promote_types(x.dtype, weight.dtype)
    expected = rms_norm_reference(summed.double(), weight.double(), EPS)
    check("rms_norm", out, expected, x=summed, weight=weight, eps=EPS, output=out.dtype)


def test_strided_inputs(backend):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(7, 300, generator=gen)[:, 5:134]
    residual = torch.randn(129, 7, generator=gen).T  # no unit stride along H
    weight = 1 + 0.3 * torch.randn(129, generator=gen)
    _check_outputs(x, residual, weight, *ops.add_rms_norm(x, residual, weight, EPS, backend=backend))


@pytest.mark.parametrize("dtypes", DTYPES, ids=IDS)
@pytest.mark.parametrize("shape", [(7, 129), (70, 33), (1, 4099)])
def test_gradients_match_fp64(backend, shape, dtypes):
    if backend == "torch" and dtypes[0] != torch.float32:
        pytest.skip("the torch reference's half-precision backward is not what the bound describes (test_rms_norm)")
    x, residual, weight = _inputs(shape, *dtypes, seed=11 + sum(shape))
    for t in (x, residual, weight):
        t.requires_grad_()
    out, summed = ops.add_rms_norm(x, residual, weight, EPS, backend=backend)
    gen = torch.Generator().manual_seed(2)
    g_out = torch.randn(out.shape, generator=gen).to(out.dtype)
    g_sum = torch.randn(summed.shape, generator=gen).to(summed.dtype)
    torch.autograd.backward((out, summed), (g_out, g_sum))
    # fp64 reference on the sum as the op rounded it (the gradient flows through that rounding unchanged).
    v64 = summed.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    rms_norm_reference(v64, w64, EPS).backward(g_out.double())
    expected_x = v64.grad + g_sum.double()
    inputs = dict(x=summed.detach(), weight=weight, grad_y=g_out, eps=EPS)
    # The norm's gradient plus the sum's: the reference adds the two in x's dtype, one more rounding.
    bound_x = tolerance("rms_norm_grad_x").bound(**inputs) + rounding(expected_x, x.dtype)
    assert_within_bound(x.grad, expected_x, bound_x, "add_rms_norm grad_x")
    assert_within_bound(residual.grad, expected_x, bound_x, "add_rms_norm grad_residual")
    check("rms_norm_grad_w", weight.grad, w64.grad, **inputs)


def test_gradient_through_the_sum_alone(backend):
    x, residual, weight = _inputs((5, 40), torch.float32, torch.float32, seed=3)
    x.requires_grad_()
    _, summed = ops.add_rms_norm(x, residual, weight, EPS, backend=backend)
    summed.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.ext
def test_cpp_opcheck():
    load_extension()
    x, residual, weight = _inputs((5, 33), torch.float32, torch.float32, seed=2)
    args = (x.requires_grad_(), residual.requires_grad_(), weight.requires_grad_(), EPS)
    torch.library.opcheck(torch.ops.tao_engine.add_rms_norm.default, args)


def test_mismatched_residual_is_refused(backend):
    with pytest.raises((ValueError, RuntimeError)):
        ops.add_rms_norm(torch.randn(3, 8), torch.randn(3, 7), torch.ones(8), EPS, backend=backend)
