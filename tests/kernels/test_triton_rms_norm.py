"""The `triton` backend of rms_norm (kernels/rms_norm.py) against the fp64 reference, forward and backward."""

from __future__ import annotations

import itertools

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.registry import BackendUnavailableError
from tao_engine.ops.rms_norm import rms_norm_reference
from tests.tolerances import check

pytestmark = pytest.mark.triton

EPS = 1e-6
SHAPES = list(itertools.product((1, 7, 33), (7, 129, 576)))  # (rows, hidden)


def _inputs(rows: int, hidden: int, dtype: torch.dtype, device: torch.device, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, hidden, generator=gen) * 2 + 0.5).to(dtype).to(device)
    weight = (1 + 0.3 * torch.randn(hidden, generator=gen)).to(dtype).to(device)
    return x, weight


def _reference64(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return rms_norm_reference(x.double(), weight.double(), EPS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("rows", "hidden"), SHAPES)
def test_forward_matches_fp64_reference(triton_device, rows, hidden, dtype):
    x, weight = _inputs(rows, hidden, dtype, triton_device, seed=rows * 1000 + hidden)
    y = ops.rms_norm(x, weight, EPS, backend="triton")
    assert y.dtype == dtype and y.shape == x.shape
    check("rms_norm", y, _reference64(x, weight), x=x, weight=weight, eps=EPS, output=dtype)


def test_bf16_rounds_before_the_weight_multiply_like_the_reference(triton_device):
    x, weight = _inputs(33, 576, torch.bfloat16, triton_device, seed=1)
    y = ops.rms_norm(x, weight, EPS, backend="triton")
    ref = rms_norm_reference(x, weight, EPS)  # bf16 reference: normed rounded to bf16, then the bf16 product
    x32 = x.float()
    multiply_then_round = (weight.float() * x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + EPS)).bfloat16()
    assert (multiply_then_round != ref).any(), "inputs too easy: both rounding orders agree"
    # Same arithmetic as the reference: the fp32 normalized rows differ by their rsqrt's error at most, which can
    # move the bf16 rounding of n across a boundary (one bf16 ulp), then the product rounds again: each is within
    # the derived bound of fp64, and bit-identical almost everywhere.
    for out in (y, ref):
        check("rms_norm", out, _reference64(x, weight), x=x, weight=weight, eps=EPS, output=torch.bfloat16)
    assert (y == ref).float().mean() > 0.99


def test_mixed_dtypes_promote_like_the_reference(triton_device):
    x, _ = _inputs(7, 129, torch.bfloat16, triton_device, seed=2)
    _, weight = _inputs(7, 129, torch.float32, triton_device, seed=3)
    y = ops.rms_norm(x, weight, EPS, backend="triton")
    ref = rms_norm_reference(x, weight, EPS)
    assert y.dtype == ref.dtype == torch.float32
    for out in (y, ref):  # two fp32 computations, each within the bound of fp64 (n rounded to bf16 first)
        check("rms_norm", out, _reference64(x, weight), x=x, weight=weight, eps=EPS, output=torch.float32)


@pytest.mark.parametrize(("rows", "hidden"), [(1, 7), (7, 129), (33, 576)])
def test_gradients_match_fp64_autograd(triton_device, rows, hidden):
    x, weight = _inputs(rows, hidden, torch.float32, triton_device, seed=rows + hidden)
    grad_y = torch.randn(rows, hidden, generator=torch.Generator().manual_seed(rows)).to(triton_device)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    ops.rms_norm(x, weight, EPS, backend="triton").backward(grad_y)
    x64 = x.detach().double().requires_grad_(True)
    w64 = weight.detach().double().requires_grad_(True)
    rms_norm_reference(x64, w64, EPS).backward(grad_y.double())
    inputs = dict(x=x, weight=weight, grad_y=grad_y, eps=EPS)
    check("rms_norm_grad_x", x.grad, x64.grad, **inputs)
    check("rms_norm_grad_w", weight.grad, w64.grad, **inputs)


def test_bf16_gradients_keep_dtypes_and_values(triton_device):
    x, weight = _inputs(33, 129, torch.bfloat16, triton_device, seed=4)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    grad_y = torch.randn(33, 129, generator=torch.Generator().manual_seed(5)).bfloat16().to(triton_device)
    ops.rms_norm(x, weight, EPS, backend="triton").backward(grad_y)
    assert x.grad.dtype == weight.grad.dtype == torch.bfloat16
    x64 = x.detach().double().requires_grad_(True)
    w64 = weight.detach().double().requires_grad_(True)
    rms_norm_reference(x64, w64, EPS).backward(grad_y.double())
    inputs = dict(x=x, weight=weight, grad_y=grad_y, eps=EPS)
    check("rms_norm_grad_x", x.grad, x64.grad, **inputs)
    check("rms_norm_grad_w", weight.grad, w64.grad, **inputs)  # a sum over 33 rows, the bf16 n in each


def test_strided_rows_and_non_contiguous_inputs(triton_device):
    gen = torch.Generator().manual_seed(6)
    hidden = 129
    # Rows with a stride (a slice of a wider buffer) are addressed in place; a transposed [B, T, H] view is copied.
    wide = torch.randn(7, hidden + 64, generator=gen).to(triton_device)
    transposed = torch.randn(5, 3, hidden, generator=gen).to(triton_device).transpose(0, 1)  # [3, 5, H]
    weight = (1 + 0.3 * torch.randn(hidden, generator=gen)).to(triton_device)
    for x in (wide[:, 3 : 3 + hidden], transposed):
        assert not x.is_contiguous()
        x_in = x.detach().requires_grad_(True)  # a non-contiguous leaf: the op sees this very layout
        w = weight.detach().requires_grad_(True)
        y = ops.rms_norm(x_in, w, EPS, backend="triton")
        y.sum().backward()  # grad_y is an expanded, stride-0 tensor
        x64 = x.detach().double().requires_grad_(True)
        w64 = weight.detach().double().requires_grad_(True)
        ref = rms_norm_reference(x64, w64, EPS)
        ref.sum().backward()
        assert y.shape == x.shape
        check("rms_norm", y, ref, x=x, weight=weight, eps=EPS, output=torch.float32)
        inputs = dict(x=x, weight=weight, grad_y=torch.ones_like(x), eps=EPS)
        check("rms_norm_grad_x", x_in.grad, x64.grad, **inputs)
        check("rms_norm_grad_w", w.grad, w64.grad, **inputs)


def test_no_rows(triton_device):
    x = torch.randn(0, 9, device=triton_device, requires_grad=True)
    weight = torch.randn(9, device=triton_device, requires_grad=True)
    y = ops.rms_norm(x, weight, EPS, backend="triton")
    assert y.shape == (0, 9)
    y.sum().backward()
    assert x.grad.shape == (0, 9) and torch.equal(weight.grad, torch.zeros(9, device=triton_device))


def test_unsupported_calls_raise_with_the_reason(triton_device, monkeypatch):
    x = torch.randn(3, 8, dtype=torch.float64, device=triton_device)
    with pytest.raises(BackendUnavailableError, match="float64"):
        ops.rms_norm(x, torch.ones(8, dtype=torch.float64, device=triton_device), EPS, backend="triton")
    with pytest.raises(BackendUnavailableError, match=r"weight must be \[H\]"):
        ops.rms_norm(x.float(), torch.ones(9, device=triton_device), EPS, backend="triton")
    if triton_device.type == "cpu":
        # The interpreter is what lets CPU tensors in; supports() reads the variable on every call.
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
            ops.rms_norm(x.float(), torch.ones(8), EPS, backend="triton")


def test_cpu_auto_resolution_never_picks_triton(triton_device):
    # Even with the interpreter on, CPU tensors reach the Triton kernels only when triton is asked for by name.
    op = ops.all_ops()["rms_norm"]
    x, weight = _inputs(3, 8, torch.float32, torch.device("cpu"), seed=7)
    assert op.resolve("cpu", None, x, weight, EPS) is not op.backends["triton"].fn
    if triton_device.type == "cpu":
        with ops.use_backend("triton"):
            assert op.resolve("cpu", None, x, weight, EPS) is op.backends["triton"].fn
