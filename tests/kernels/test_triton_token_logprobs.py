"""The `triton` backend of token_logprobs (kernels/token_logprobs.py) against fp64 log_softmax, forward and backward."""

from __future__ import annotations

import itertools

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.registry import BackendUnavailableError
from tests.tolerances import check

pytestmark = pytest.mark.triton

SHAPES = list(itertools.product((1, 7, 33), (7, 129, 4099)))  # (rows, vocab); 4099 spans two 4096-wide chunks


def _reference64(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    # The op's specification in fp64 (token_logprobs_reference itself computes in fp32).
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)
    return logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)


def _inputs(shape: tuple[int, ...], vocab: int, dtype: torch.dtype, device: torch.device, seed: int, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(*shape, vocab, generator=gen) * scale).to(dtype).to(device)
    targets = torch.randint(0, vocab, shape, generator=gen).to(device)
    return logits, targets


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("rows", "vocab"), SHAPES)
def test_forward_matches_fp64_reference(triton_device, rows, vocab, dtype):
    temperature = 0.7 if rows % 2 else 1.0
    logits, targets = _inputs((rows,), vocab, dtype, triton_device, seed=rows * 10000 + vocab)
    out = ops.token_logprobs(logits, targets, temperature, backend="triton")
    assert out.dtype == torch.float32 and out.shape == (rows,)
    assert (out <= 0).all()
    ref = _reference64(logits, targets, temperature)
    check("token_logprobs", out, ref, logits=logits, targets=targets, temperature=temperature)


def test_float16_logits(triton_device):
    logits, targets = _inputs((7,), 129, torch.float16, triton_device, seed=1)
    out = ops.token_logprobs(logits, targets, backend="triton")
    check("token_logprobs", out, _reference64(logits, targets, 1.0), logits=logits, targets=targets)


def test_logprobs_never_positive_on_peaked_rows(triton_device):
    # Targets that hold (nearly) all the mass, at large scale and low temperature: the exact answer is 0 or -tiny,
    # where rounding could push an unclamped result above 0.
    logits, _ = _inputs((33,), 129, torch.float32, triton_device, seed=2, scale=30.0)
    targets = logits.argmax(-1)
    logits[torch.arange(33), targets] += torch.linspace(0.0, 50.0, 33, device=triton_device)
    for temperature in (1.0, 0.3, 1e-3):
        out = ops.token_logprobs(logits, targets, temperature, backend="triton")
        assert (out <= 0).all(), out.max()
        check("token_logprobs", out, _reference64(logits, targets, temperature), logits=logits, targets=targets,
              temperature=temperature)


def test_running_max_grows_in_a_later_chunk(triton_device):
    # The row max sits in the second 4096-wide chunk, so the running sum must be rescaled when the max moves.
    logits, targets = _inputs((7,), 4099, torch.float32, triton_device, seed=9)
    logits[:, 4097] += 25.0
    targets[0] = 4097
    logits.requires_grad_(True)
    out = ops.token_logprobs(logits, targets, backend="triton")
    out.sum().backward()
    logits64 = logits.detach().double().requires_grad_(True)
    ref = _reference64(logits64, targets, 1.0)
    ref.sum().backward()
    check("token_logprobs", out, ref, logits=logits, targets=targets)
    check("token_logprobs_grad", logits.grad, logits64.grad, logits=logits, targets=targets, upstream=torch.ones(7))


@pytest.mark.parametrize(("rows", "vocab", "temperature"), [(1, 7, 1.0), (7, 129, 0.7), (33, 4099, 1.3)])
def test_gradients_match_fp64_autograd(triton_device, rows, vocab, temperature):
    logits, targets = _inputs((rows,), vocab, torch.float32, triton_device, seed=rows + vocab)
    grad_out = torch.randn(rows, generator=torch.Generator().manual_seed(rows)).to(triton_device)
    logits.requires_grad_(True)
    ops.token_logprobs(logits, targets, temperature, backend="triton").backward(grad_out)
    logits64 = logits.detach().double().requires_grad_(True)
    _reference64(logits64, targets, temperature).backward(grad_out.double())
    check("token_logprobs_grad", logits.grad, logits64.grad, logits=logits, targets=targets, upstream=grad_out,
          temperature=temperature)


def test_bf16_gradients_keep_the_logits_dtype(triton_device):
    logits, targets = _inputs((7,), 4099, torch.bfloat16, triton_device, seed=3)
    logits.requires_grad_(True)
    grad_out = torch.randn(7, generator=torch.Generator().manual_seed(4)).to(triton_device)
    ops.token_logprobs(logits, targets, 0.7, backend="triton").backward(grad_out)
    assert logits.grad.dtype == torch.bfloat16
    logits64 = logits.detach().double().requires_grad_(True)
    _reference64(logits64, targets, 0.7).backward(grad_out.double())
    check("token_logprobs_grad", logits.grad, logits64.grad, logits=logits, targets=targets, upstream=grad_out,
          temperature=0.7)


def test_shifted_slices_of_batched_tensors(triton_device):
    # The RL layout: logits [B, T, V] and input ids [B, T]; position t predicts token t + 1.
    logits_bt, ids = _inputs((3, 9), 129, torch.float32, triton_device, seed=5)
    logits, targets = logits_bt[:, :-1], ids[:, 1:]  # [3, 8, V], [3, 8]: neither is contiguous
    assert not logits.is_contiguous() and not targets.is_contiguous()
    leaf = logits.detach().requires_grad_(True)
    out = ops.token_logprobs(leaf, targets, 0.9, backend="triton")
    assert out.shape == (3, 8)
    out.sum().backward()  # expanded, stride-0 upstream gradient
    logits64 = logits.detach().double().requires_grad_(True)
    ref = _reference64(logits64, targets, 0.9)
    ref.sum().backward()
    check("token_logprobs", out, ref, logits=logits, targets=targets, temperature=0.9)
    check("token_logprobs_grad", leaf.grad, logits64.grad, logits=logits, targets=targets, upstream=torch.ones(3, 8),
          temperature=0.9)


@pytest.mark.parametrize("lead", [(), (2, 3, 4)])
def test_other_leading_shapes(triton_device, lead):
    logits, targets = _inputs(lead, 33, torch.float32, triton_device, seed=6)
    targets = targets.int()  # any integer dtype, as in the reference's `.long()`
    out = ops.token_logprobs(logits, targets, backend="triton")
    assert out.shape == lead
    check("token_logprobs", out, _reference64(logits, targets, 1.0), logits=logits, targets=targets)


def test_out_of_range_targets_give_nan(triton_device):
    # A kernel cannot raise the way the reference's gather does; the bad row is poisoned, the others are untouched.
    logits, targets = _inputs((4,), 17, torch.float32, triton_device, seed=7)
    targets[1], targets[2] = 17, -1
    logits.requires_grad_(True)
    out = ops.token_logprobs(logits, targets, backend="triton")
    assert out[1].isnan() and out[2].isnan()
    good = torch.tensor([0, 3], device=triton_device)
    check("token_logprobs", out[good], _reference64(logits[good], targets[good], 1.0), logits=logits[good],
          targets=targets[good])
    # Masking the NaN out of the loss leaves finite gradients: the bad rows get none.
    torch.where(out.isnan(), 0.0, out).sum().backward()
    assert logits.grad.isfinite().all() and (logits.grad[1:3] == 0).all() and (logits.grad[0] != 0).any()


def test_bad_arguments(triton_device):
    logits, targets = _inputs((3,), 11, torch.float32, triton_device, seed=8)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ops.token_logprobs(logits, targets, 0.0, backend="triton")
    with pytest.raises(BackendUnavailableError, match="float64"):
        ops.token_logprobs(logits.double(), targets, backend="triton")
    with pytest.raises(BackendUnavailableError, match="integer"):
        ops.token_logprobs(logits, targets.float(), backend="triton")
    with pytest.raises(BackendUnavailableError, match="shape"):
        ops.token_logprobs(logits, targets[:2], backend="triton")
