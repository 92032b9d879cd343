"""The `triton` backend of linear_logprobs (kernels/linear_logprobs.py) against fp64 log_softmax of the full logits:
log-probs, entropy and their gradients in hidden and weight, with the vocabulary in one block or several (and the
Triton tiles forced small, so the online log-sum-exp rescales across tiles and across blocks)."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.registry import BackendUnavailableError
from tests.error_bounds import assert_within_bound, linear_logprobs_grad_bounds
from tests.tolerances import check

pytestmark = pytest.mark.triton

SHAPES = [(1, 7, 5), (7, 129, 64), (33, 300, 16), (7, 4099, 5)]  # (N, V, H); the interpreter is slow: small N
TEMPERATURES = [0.7, 1.0, 1.3]


def _inputs(rows, vocab, width, dtype, device, seed, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, width, generator=gen).to(dtype)
    weight = (torch.randn(vocab, width, generator=gen) * scale / width**0.5).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    return hidden.to(device), weight.to(device), targets.to(device)


def _reference64(hidden, weight, targets, temperature):
    # The specification in fp64 (linear_logprobs_reference itself computes in fp32): (logprobs, entropy).
    logp = torch.log_softmax(hidden.double() @ weight.double().T / temperature, dim=-1)
    return logp.gather(-1, targets[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


def _run(hidden, weight, targets, temperature, blocks):
    """(logprobs, entropy) through ops (default blocks) or through the kernel module with forced block sizes."""
    if blocks is None:
        return ops.linear_logprobs(hidden, weight, targets, temperature, return_entropy=True, backend="triton")
    from tao_engine.ops.triton_support import kernel_module

    chunk, block_v = blocks
    return kernel_module("linear_logprobs").linear_logprobs(hidden, weight, targets, temperature, chunk, block_v)


def _check(hidden, weight, targets, temperature, dtype, blocks=None, terms="logprobs+entropy"):
    gen = torch.Generator().manual_seed(hidden.shape[0] * 3 + weight.shape[0])
    g_lp = torch.randn(hidden.shape[0], generator=gen).to(hidden.device) if "logprobs" in terms else None
    g_ent = torch.randn(hidden.shape[0], generator=gen).to(hidden.device) if "entropy" in terms else None
    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    logprobs, entropy = _run(h, w, targets, temperature, blocks)
    ref_logprobs, ref_entropy = _reference64(hidden, weight, targets, temperature)
    for out in (logprobs, entropy):
        assert out.dtype == torch.float32 and out.shape == (hidden.shape[0],)
    inputs = dict(hidden=hidden, weight=weight, temperature=temperature)
    check("linear_logprobs", logprobs, ref_logprobs, targets=targets, **inputs)
    check("linear_entropy", entropy, ref_entropy, **inputs)
    assert (logprobs <= 0).all() and (entropy >= 0).all()
    sum((g * out).sum() for g, out in ((g_lp, logprobs), (g_ent, entropy)) if g is not None).backward()
    ref_h, bound_h, ref_w, bound_w = linear_logprobs_grad_bounds(hidden, weight, targets, temperature, g_lp, g_ent,
                                                                   dtype)
    for got, ref, bound, source, name in ((h.grad, ref_h, bound_h, hidden, "grad_hidden"),
                                          (w.grad, ref_w, bound_w, weight, "grad_weight")):
        assert got.dtype == source.dtype and got.shape == source.shape
        assert_within_bound(got, ref, bound, f"linear_logprobs triton {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("rows", "vocab", "width"), SHAPES)
def test_matches_fp64_reference(triton_device, rows, vocab, width, dtype):
    temperature = TEMPERATURES[(rows + vocab) % 3]
    hidden, weight, targets = _inputs(rows, vocab, width, dtype, triton_device, seed=rows * 1009 + vocab + width)
    _check(hidden, weight, targets, temperature, dtype)


@pytest.mark.parametrize(("terms", "temperature"), [("logprobs", 0.7), ("entropy", 1.3), ("logprobs+entropy", 1.0)])
@pytest.mark.parametrize(("chunk", "block_v"), [(50, 16), (129, 32), (301, 64)])  # ragged blocks and tiles
def test_several_blocks_and_tiles(triton_device, chunk, block_v, terms, temperature):
    # The row max sits in a later block for some rows, so both the tile loop and the block loop rescale their sums.
    hidden, weight, targets = _inputs(9, 301, 16, torch.float32, triton_device, seed=chunk + block_v)
    weight[260] = hidden[:4].mean(0) * 4.0
    targets[:2] = 260
    _check(hidden, weight, targets, temperature, torch.float32, blocks=(chunk, block_v), terms=terms)


def test_non_contiguous_inputs(triton_device):
    hidden, weight, targets = _inputs(7, 129, 16, torch.float32, triton_device, seed=4)
    wide = torch.cat([torch.randn(7, 3, device=triton_device), hidden], dim=1)
    column_slice = wide[:, 3:]
    weight_t = weight.t().contiguous().t()
    assert not column_slice.is_contiguous() and not weight_t.is_contiguous()
    _check(column_slice, weight_t, targets, 1.3, torch.float32)


def test_logprobs_never_positive_on_peaked_rows(triton_device):
    hidden, weight, targets = _inputs(33, 129, 16, torch.float32, triton_device, seed=2, scale=30.0)
    targets = (hidden @ weight.T).argmax(-1)
    for temperature in (1.0, 0.3, 1e-3):
        logprobs, entropy = ops.linear_logprobs(hidden, weight, targets, temperature, True, backend="triton")
        assert (logprobs <= 0).all(), logprobs.max()
        assert (entropy >= 0).all(), entropy.min()
        ref_logprobs, ref_entropy = _reference64(hidden, weight, targets, temperature)
        inputs = dict(hidden=hidden, weight=weight, temperature=temperature)
        check("linear_logprobs", logprobs, ref_logprobs, targets=targets, **inputs)
        check("linear_entropy", entropy, ref_entropy, **inputs)


def test_bad_arguments(triton_device):
    hidden, weight, targets = _inputs(3, 11, 8, torch.float32, triton_device, seed=8)
    bad = targets.clone()
    bad[1] = 11
    with pytest.raises(ValueError, match="11 is out of range"):
        ops.linear_logprobs(hidden, weight, bad, backend="triton")
    for temperature in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be finite and > 0"):
            ops.linear_logprobs(hidden, weight, targets, temperature, backend="triton")
    with pytest.raises(ValueError, match=r"weight must be 2-D \[V, H\]"):
        ops.linear_logprobs(hidden, weight[:, :5], targets, backend="triton")
    with pytest.raises(BackendUnavailableError, match="float64"):
        ops.linear_logprobs(hidden.double(), weight, targets, backend="triton")
    with pytest.raises(BackendUnavailableError, match="integer"):
        ops.linear_logprobs(hidden, weight, targets.float(), backend="triton")
