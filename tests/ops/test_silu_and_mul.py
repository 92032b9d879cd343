"""silu_and_mul (tao_engine/ops/activation.py) on every CPU backend against fp64: forward and gradients for odd
shapes and non-contiguous inputs, gates far into both tails (no exp overflow), bounds derived from the computation
(tests/tolerances.py); the cpp op's registrations (opcheck)."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.activation import silu_and_mul_reference
from tao_engine.ops.extension import load_extension
from tests.ops.conftest import backends
from tests.tolerances import check

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(1,), (7, 129), (129, 4099), (2, 3, 5)]


@pytest.fixture(params=backends("torch", "cpp"))
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _inputs(shape, dtype, seed, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * scale).to(dtype), torch.randn(shape, generator=gen).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_fp64(backend, shape, dtype):
    gate, up = _inputs(shape, dtype, seed=sum(shape))
    out = ops.silu_and_mul(gate, up, backend=backend)
    expected = silu_and_mul_reference(gate.double(), up.double())
    assert out.dtype == dtype and out.shape == gate.shape
    check("silu_and_mul", out, expected, gate=gate, up=up)


def test_extreme_gates(backend):
    gate = torch.tensor([-1e4, -100.0, -88.0, -80.0, -20.0, -1.28, 0.0, 1e-30, 20.0, 100.0, 1e4, float("-inf")])
    up = torch.ones_like(gate)
    out = ops.silu_and_mul(gate, up, backend=backend)
    expected = silu_and_mul_reference(gate.double(), up.double())
    assert out[-1].isnan() and expected[-1].isnan()  # -inf * sigmoid(-inf) = -inf * 0: NaN in both
    # Where e^g is below fp32's normal range (g < -87) the cpp kernel's exp gives 0, so silu is 0 instead of g e^g,
    # whose magnitude is below 6e-37 there; elsewhere, the usual bound.
    tiny = (gate < -87) & gate.isfinite()
    normal = ~tiny & gate.isfinite()
    assert (out[tiny].abs() <= 6e-37).all() and (expected[tiny].abs() <= 6e-37).all()
    check("silu_and_mul", out[normal], expected[normal], gate=gate[normal], up=up[normal])


def test_non_contiguous_inputs(backend):
    gen = torch.Generator().manual_seed(5)
    gate = torch.randn(129, 7, generator=gen).T  # [7, 129] transposed view
    up = torch.randn(7, 300, generator=gen)[:, ::2][:, :129]  # every other column
    out = ops.silu_and_mul(gate, up, backend=backend)
    expected = silu_and_mul_reference(gate.double(), up.double())
    check("silu_and_mul", out, expected, gate=gate, up=up)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 129), (65, 1537)])
def test_halves_of_one_wider_matrix(backend, rows, cols, dtype):
    # The engine's packed MLP: gate and up are the two column halves of one [N, 2I] GEMM output, read in place (the
    # cpp kernel walks their rows; a copy-free path with its own indexing), with a gap column so no half ends where
    # the other starts.
    gen = torch.Generator().manual_seed(rows + cols)
    joined = (torch.randn(rows, 2 * cols + 1, generator=gen) * 3).to(dtype)
    gate, up = joined[:, :cols], joined[:, cols + 1:]
    before = joined.clone()
    out = ops.silu_and_mul(gate, up, backend=backend)
    assert out.shape == (rows, cols) and out.is_contiguous()
    assert torch.equal(joined, before)  # inputs untouched
    check("silu_and_mul", out, silu_and_mul_reference(gate.double(), up.double()), gate=gate, up=up)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7, 129), (33, 4099)])
def test_gradients_match_fp64(backend, shape, dtype):
    gate, up = _inputs(shape, dtype, seed=3 + sum(shape))
    gate.requires_grad_()
    up.requires_grad_()
    out = ops.silu_and_mul(gate, up, backend=backend)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    out.backward(grad)
    g64, u64 = gate.detach().double().requires_grad_(), up.detach().double().requires_grad_()
    silu_and_mul_reference(g64, u64).backward(grad.double())
    assert gate.grad.dtype == dtype and up.grad.dtype == dtype
    check("silu_and_mul_grad_gate", gate.grad, g64.grad, gate=gate, up=up, grad=grad)
    check("silu_and_mul_grad_up", up.grad, u64.grad, gate=gate, up=up, grad=grad)


@pytest.mark.ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpp_opcheck(dtype):
    load_extension()
    gate, up = _inputs((5, 33), dtype, seed=2)
    torch.library.opcheck(torch.ops.tao_engine.silu_and_mul.default, (gate.requires_grad_(), up.requires_grad_()))
    grad = torch.randn(5, 33).to(dtype)
    torch.library.opcheck(torch.ops.tao_engine.silu_and_mul_backward.default, (grad, gate.detach(), up.detach()))


def test_shape_mismatch_is_refused(backend):
    with pytest.raises((ValueError, RuntimeError)):
        ops.silu_and_mul(torch.randn(3, 8), torch.randn(3, 7), backend=backend)
