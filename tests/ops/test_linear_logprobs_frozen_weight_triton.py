"""The frozen-weight path of linear_logprobs' `triton` backend (kernels/linear_logprobs.py,
LinearLogprobsFrozenWeightFunction): hidden requires grad, the weight does not, and the backward is elementwise from
E_p[W] and Cov_p(z, W) kept by the forward. Against fp64 autograd with random upstream gradients, with the vocabulary
in one block or several and the Triton tiles forced small (so the weight sums are rescaled across blocks). On a CUDA
device when there is one, else on CPU tensors under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET)."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tests.error_bounds import assert_within_bound, linear_logprobs_grad_bounds
from tests.tolerances import check

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def device() -> torch.device:
    pytest.importorskip("triton", reason="triton is not installed")
    from tao_engine.ops import all_ops
    from tao_engine.ops.triton_support import interpret_mode

    ok, why = all_ops()["linear_logprobs"].available("triton")
    if not ok:
        pytest.skip(f"triton backend unavailable: {why}")
    return torch.device("cpu") if interpret_mode() else torch.device("cuda")


def _inputs(rows, vocab, width, device, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, width, generator=gen).to(dtype)
    weight = (torch.randn(vocab, width, generator=gen) * 3.0 / width**0.5).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    return hidden.to(device), weight.to(device), targets.to(device)


def _reference64(hidden, weight, targets, temperature):
    logp = torch.log_softmax(hidden.double() @ weight.double().T / temperature, dim=-1)
    return logp.gather(-1, targets[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


def _run(hidden, weight, targets, temperature, return_entropy, blocks):
    if blocks is None:
        out = ops.linear_logprobs(hidden, weight, targets, temperature, return_entropy, backend="triton")
        return out if return_entropy else (out, None)
    from tao_engine.ops.triton_support import kernel_module

    chunk, block_v = blocks
    module = kernel_module("linear_logprobs")
    return module.linear_logprobs(hidden, weight, targets, temperature, chunk, block_v, entropy_grad=return_entropy)


def _check(hidden, weight, targets, temperature, terms, blocks=None, dtype=torch.float32):
    gen = torch.Generator().manual_seed(hidden.shape[0] + weight.shape[0])
    g_lp = torch.randn(hidden.shape[0], generator=gen).to(hidden.device)
    g_ent = torch.randn(hidden.shape[0], generator=gen).to(hidden.device)
    g_lp, g_ent = (g_lp if "logprobs" in terms else None), (g_ent if "entropy" in terms else None)
    h = hidden.clone().requires_grad_()
    logprobs, entropy = _run(h, weight, targets, temperature, "entropy" in terms, blocks)
    assert "FrozenWeight" in type(logprobs.grad_fn).__name__
    ref_logprobs, ref_entropy = _reference64(hidden, weight, targets, temperature)
    inputs = dict(hidden=hidden, weight=weight, temperature=temperature)
    check("linear_logprobs", logprobs, ref_logprobs, targets=targets, **inputs)
    if "entropy" in terms:
        check("linear_entropy", entropy, ref_entropy, **inputs)
    sum((g * out).sum() for g, out in ((g_lp, logprobs), (g_ent, entropy)) if g is not None).backward()
    assert weight.grad is None and h.grad.dtype == hidden.dtype
    ref, bound, _, _ = linear_logprobs_grad_bounds(hidden, weight, targets, temperature, g_lp, g_ent, dtype)
    assert_within_bound(h.grad, ref, bound, "linear_logprobs triton frozen-weight grad_hidden")


SHAPES = [(1, 7, 5, 0.7), (7, 129, 64, 1.3), (33, 300, 16, 1.0)]  # (N, V, H, T); the interpreter is slow: small N


@pytest.mark.parametrize("terms", ["logprobs", "entropy", "logprobs+entropy"])
@pytest.mark.parametrize(("rows", "vocab", "width", "temperature"), SHAPES)
def test_frozen_weight_matches_fp64_autograd(device, rows, vocab, width, temperature, terms):
    hidden, weight, targets = _inputs(rows, vocab, width, device, seed=rows * 13 + vocab + width)
    _check(hidden, weight, targets, temperature, terms)


@pytest.mark.parametrize(("chunk", "block_v"), [(50, 16), (129, 32)])  # ragged blocks and tiles
def test_frozen_weight_several_blocks_and_tiles(device, chunk, block_v):
    # The row max sits in a later block for some rows, so the weight sums are rescaled between blocks.
    hidden, weight, targets = _inputs(9, 301, 16, device, seed=chunk + block_v)
    weight[260] = hidden[:4].mean(0) * 4.0
    targets[:2] = 260
    _check(hidden, weight, targets, 0.7, "logprobs+entropy", blocks=(chunk, block_v))


def test_frozen_weight_bf16(device):
    hidden, weight, targets = _inputs(7, 129, 16, device, seed=3, dtype=torch.bfloat16)
    _check(hidden, weight, targets, 1.3, "logprobs+entropy", dtype=torch.bfloat16)


def test_entropy_has_no_gradient_without_entropy_grad(device):
    hidden, weight, targets = _inputs(5, 40, 8, device, seed=4)
    logprobs, entropy = _run(hidden.clone().requires_grad_(), weight, targets, 1.0, False, blocks=(16, 16))
    assert logprobs.requires_grad and not entropy.requires_grad
    ref_logprobs, ref_entropy = _reference64(hidden, weight, targets, 1.0)
    check("linear_entropy", entropy, ref_entropy, hidden=hidden, weight=weight)
