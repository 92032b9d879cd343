"""linear_logprobs on every backend (torch reference, `cpp` csrc/cpu/linear_logprobs*.{h,cpp}, `triton`
kernels/linear_logprobs.py) against fp64 log_softmax of the full logits: log-probs, entropy and the gradients of both
in hidden and weight, blocked paths (several vocabulary and row blocks; Triton's tiles forced small, so the online
log-sum-exp rescales across tiles and blocks), strided inputs, the never-positive guard, NaN rows, empty batches, bad
input; the cpp op's per-ISA kernel copies, registrations (opcheck) and dispatch. The frozen-weight backward:
tests/ops/test_linear_logprobs_frozen_weight.py."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.extension import load_extension
from tao_engine.ops.linear_logprobs import linear_logprobs_reference
from tao_engine.ops.registry import BackendUnavailableError, all_ops
from tao_engine.ops.triton_support import kernel_module
from tests.error_bounds import assert_within_bound, linear_logprobs_grad_bounds
from tests.helpers import run_at_baseline_isa
from tests.ops.conftest import backends, cases
from tests.ops.linear_logprobs_cases import inputs as _inputs
from tests.ops.linear_logprobs_cases import reference64 as _reference64
from tests.tolerances import check

# (N, V, H). For small N the cpp kernels take the vocabulary in blocks of 8192 rows, so V = 9001 spans two blocks
# (the second ragged); N = 4097 takes 4096 + 1 rows per block and V = 1100 two blocks of 1024 + 76. Triton's
# interpreter is slow: small N.
CPU_SHAPES = [(1, 7, 5), (7, 129, 64), (129, 4099, 64), (129, 129, 5), (7, 9001, 16)]
TRITON_SHAPES = [(1, 7, 5), (7, 129, 64), (33, 300, 16), (7, 4099, 5)]
BLOCKED_SHAPE = (4097, 1100, 5)
DTYPES = [torch.float32, torch.bfloat16]
TEMPERATURES = [0.7, 1.0, 1.3]
KERNELS = backends("cpp", "triton")


def _assert_values(logprobs, entropy, hidden, weight, targets, temperature):
    ref_logprobs, ref_entropy = _reference64(hidden, weight, targets, temperature)
    for out, ref in ((logprobs, ref_logprobs), (entropy, ref_entropy)):
        assert out.dtype == torch.float32 and out.shape == ref.shape
    check("linear_logprobs", logprobs, ref_logprobs, hidden=hidden, weight=weight, targets=targets,
          temperature=temperature)
    check("linear_entropy", entropy, ref_entropy, hidden=hidden, weight=weight, temperature=temperature)
    assert (logprobs <= 0).all() and (entropy >= 0).all()


def _run(hidden, weight, targets, temperature, backend, blocks=None):
    """(logprobs, entropy) through ops, or through the Triton kernel module with forced (chunk, block_v) sizes."""
    if blocks is None:
        return ops.linear_logprobs(hidden, weight, targets, temperature, return_entropy=True, backend=backend)
    return kernel_module("linear_logprobs").linear_logprobs(hidden, weight, targets, temperature, *blocks)


def _check_gradients(hidden, weight, targets, temperature, terms, dtype, backend, blocks=None):
    """Values, then d/d(hidden, weight) of sum(g_lp * logprobs) + sum(g_ent * entropy) against fp64, within the
    bound derived from the reductions (tests/error_bounds.py)."""
    gen = torch.Generator().manual_seed(hidden.shape[0] + weight.shape[0])
    g_lp = torch.randn(hidden.shape[0], generator=gen).to(hidden.device) if "logprobs" in terms else None
    g_ent = torch.randn(hidden.shape[0], generator=gen).to(hidden.device) if "entropy" in terms else None
    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    logprobs, entropy = _run(h, w, targets, temperature, backend, blocks)
    _assert_values(logprobs.detach(), entropy.detach(), hidden, weight, targets, temperature)
    loss = sum((g * out).sum() for g, out in ((g_lp, logprobs), (g_ent, entropy)) if g is not None)
    loss.backward()
    ref_h, bound_h, ref_w, bound_w = linear_logprobs_grad_bounds(hidden, weight, targets, temperature, g_lp, g_ent,
                                                                   dtype)
    for got, ref, bound, source, name in ((h.grad, ref_h, bound_h, hidden, "grad_hidden"),
                                          (w.grad, ref_w, bound_w, weight, "grad_weight")):
        assert got.dtype == source.dtype and got.shape == source.shape
        assert_within_bound(got, ref, bound, f"linear_logprobs {backend} {name}")


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("backend", "rows", "vocab", "width"),
                         [*cases("torch", *CPU_SHAPES), *cases("cpp", *CPU_SHAPES), *cases("triton", *TRITON_SHAPES)])
def test_values_match_fp64_reference(backend, device, rows, vocab, width, dtype, temperature):
    hidden, weight, targets = _inputs(rows, vocab, width, dtype, seed=rows * 7919 + vocab + width, device=device)
    logprobs, entropy = ops.linear_logprobs(hidden, weight, targets, temperature, return_entropy=True,
                                            backend=backend)
    _assert_values(logprobs, entropy, hidden, weight, targets, temperature)
    only = ops.linear_logprobs(hidden, weight, targets, temperature, backend=backend)
    assert isinstance(only, torch.Tensor) and torch.equal(only, logprobs)


# Each loss term alone and both together, each at another temperature.
GRAD_CASES = [("logprobs", 0.7), ("entropy", 1.3), ("logprobs+entropy", 1.0)]


@pytest.mark.parametrize(("terms", "temperature"), GRAD_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("backend", "rows", "vocab", "width"), [
    *cases("cpp", (1, 7, 5), (7, 4099, 64), (129, 129, 5), (7, 9001, 16)), *cases("triton", *TRITON_SHAPES)])
def test_gradients_match_fp64_autograd(backend, device, rows, vocab, width, dtype, terms, temperature):
    hidden, weight, targets = _inputs(rows, vocab, width, dtype, seed=rows + vocab * 31 + width, device=device)
    _check_gradients(hidden, weight, targets, temperature, terms, dtype, backend)


@pytest.mark.parametrize("backend", backends("cpp"))
def test_row_and_vocabulary_blocks(backend):
    # Several row blocks and vocabulary blocks, with the row max in the second vocabulary block for some rows, so the
    # running sums are rescaled and grad_weight accumulates across row blocks.
    rows, vocab, width = BLOCKED_SHAPE
    hidden, weight, targets = _inputs(rows, vocab, width, torch.float32, seed=3)
    weight[1050] = hidden[:50].mean(0) * 4.0
    targets[:3] = 1050
    _check_gradients(hidden, weight, targets, 0.7, "logprobs+entropy", torch.float32, backend)


@pytest.mark.parametrize(("terms", "temperature"), GRAD_CASES)
@pytest.mark.parametrize(("chunk", "block_v"), [(50, 16), (129, 32), (301, 64)])  # ragged blocks and tiles
@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_several_blocks_and_tiles(backend, device, chunk, block_v, terms, temperature):
    # The row max sits in a later block for some rows, so both the tile loop and the block loop rescale their sums.
    hidden, weight, targets = _inputs(9, 301, 16, torch.float32, seed=chunk + block_v, device=device)
    weight[260] = hidden[:4].mean(0) * 4.0
    targets[:2] = 260
    _check_gradients(hidden, weight, targets, temperature, terms, torch.float32, backend, blocks=(chunk, block_v))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", KERNELS)
def test_non_contiguous_inputs(backend, device, dtype):
    rows, vocab, width = 9, 300, 24
    hidden, weight, targets = _inputs(rows, vocab, width, dtype, seed=11, device=device)
    pad = (torch.randn(rows, 3).to(dtype).to(device), torch.randn(rows, 5).to(dtype).to(device))
    column_slice = torch.cat([pad[0], hidden, pad[1]], dim=1)[:, 3 : 3 + width]  # rows width + 8 apart
    transposed = hidden.t().contiguous().t()  # column-major
    weight_t = weight.t().contiguous().t()  # a column-major LM head (e.g. a transposed tied embedding)
    for h, w in ((column_slice, weight), (transposed, weight_t), (column_slice, weight_t)):
        assert not h.is_contiguous()
        _check_gradients(h, w, targets, 1.3, "logprobs+entropy", dtype, backend)


@pytest.mark.parametrize("backend", KERNELS)
def test_frozen_weight_or_hidden_gets_no_gradient(backend, device):
    hidden, weight, targets = _inputs(7, 129, 16, torch.float32, seed=12, device=device)
    h = hidden.clone().requires_grad_()
    ops.linear_logprobs(h, weight, targets, backend=backend).sum().backward()
    ones = torch.ones(hidden.shape[0], device=device)
    ref_h, bound_h, _, _ = linear_logprobs_grad_bounds(hidden, weight, targets, 1.0, ones, None, torch.float32)
    assert weight.grad is None
    assert_within_bound(h.grad, ref_h, bound_h, "linear_logprobs grad_hidden (frozen weight)")
    w = weight.clone().requires_grad_()
    _, entropy = ops.linear_logprobs(hidden, w, targets, return_entropy=True, backend=backend)
    entropy.sum().backward()
    _, _, ref_w, bound_w = linear_logprobs_grad_bounds(hidden, weight, targets, 1.0, None, ones, torch.float32)
    assert_within_bound(w.grad, ref_w, bound_w, "linear_logprobs grad_weight (frozen hidden)")


@pytest.mark.parametrize("backend", KERNELS)
def test_logprobs_never_positive_on_peaked_rows(backend, device):
    # Targets that hold (nearly) all the mass at large scale and low temperature: the exact answer is 0 or -tiny,
    # where rounding could push an unclamped log-prob above 0 (or an entropy below 0).
    hidden, weight, targets = _inputs(33, 129, 16, torch.float32, seed=2, device=device, scale=30.0)
    targets = (hidden @ weight.T).argmax(-1)
    for temperature in (1.0, 0.3, 1e-3):
        logprobs, entropy = ops.linear_logprobs(hidden, weight, targets, temperature, True, backend=backend)
        assert (logprobs <= 0).all(), logprobs.max()
        assert (entropy >= 0).all(), entropy.min()
        _assert_values(logprobs, entropy, hidden, weight, targets, temperature)


@pytest.mark.parametrize("backend", KERNELS)
def test_nan_hidden_row_stays_nan(backend, device):
    # A NaN input poisons its own row (values and that row's gradient), as in the reference, and no other row.
    hidden, weight, targets = _inputs(5, 300, 8, torch.float32, seed=13, device=device)
    hidden[2, 3] = float("nan")
    h = hidden.clone().requires_grad_()
    logprobs, entropy = ops.linear_logprobs(h, weight, targets, 1.0, return_entropy=True, backend=backend)
    assert logprobs[2].isnan() and entropy[2].isnan()
    keep = torch.tensor([0, 1, 3, 4], device=device)
    _assert_values(logprobs[keep], entropy[keep], hidden[keep], weight, targets[keep], 1.0)
    logprobs[keep].sum().backward()
    assert h.grad[2].isnan().all() and h.grad[keep].isfinite().all()


@pytest.mark.parametrize("backend", KERNELS)
def test_empty_batch(backend, device):
    hidden = torch.zeros(0, 8, device=device, requires_grad=True)
    weight = torch.randn(10, 8, device=device, requires_grad=True)
    targets = torch.zeros(0, dtype=torch.long, device=device)
    logprobs, entropy = ops.linear_logprobs(hidden, weight, targets, 1.0, True, backend=backend)
    assert logprobs.shape == entropy.shape == (0,)
    (logprobs.sum() + entropy.sum()).backward()
    assert hidden.grad.shape == (0, 8) and torch.equal(weight.grad, torch.zeros(10, 8, device=device))


@pytest.mark.parametrize("backend", backends("torch", "cpp", "triton"))
def test_invalid_input_errors(backend, device):
    hidden, weight, targets = _inputs(4, 50, 8, torch.float32, seed=4, device=device)
    bad = targets.clone()
    bad[2] = 50
    with pytest.raises(ValueError, match="50 is out of range"):
        ops.linear_logprobs(hidden, weight, bad, backend=backend)
    bad[2] = -1
    with pytest.raises(ValueError, match="-1 is out of range"):
        ops.linear_logprobs(hidden, weight, bad, backend=backend)
    for temperature in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature must be finite and > 0"):
            ops.linear_logprobs(hidden, weight, targets, temperature, backend=backend)
    with pytest.raises(ValueError, match=r"weight must be 2-D \[V, H\]"):
        ops.linear_logprobs(hidden, weight[:, :7], targets, backend=backend)
    with pytest.raises(ValueError, match=r"targets must be 1-D \[N\]"):
        ops.linear_logprobs(hidden, weight, targets[:3], backend=backend)


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_refuses_what_its_kernels_do_not_take(backend, device):
    hidden, weight, targets = _inputs(3, 11, 8, torch.float32, seed=8, device=device)
    with pytest.raises(BackendUnavailableError, match="float64"):
        ops.linear_logprobs(hidden.double(), weight, targets, backend=backend)
    with pytest.raises(BackendUnavailableError, match="integer"):
        ops.linear_logprobs(hidden, weight, targets.float(), backend=backend)


@pytest.mark.ext
def test_compiled_op_checks_its_input():
    load_extension()
    hidden, weight, targets = _inputs(4, 50, 8, torch.float32, seed=4)
    with pytest.raises(ValueError, match="targets must be int64"):
        torch.ops.tao_engine.linear_logprobs(hidden, weight, targets.int(), 1.0)
    with pytest.raises(ValueError, match="grad_logprobs must be a float32"):
        torch.ops.tao_engine.linear_logprobs_backward(
            torch.ones(4, dtype=torch.float64), torch.ones(4), hidden, weight, targets, torch.ones(4), torch.ones(4),
            1.0, True, True,
        )  # fmt: skip


@pytest.mark.ext
def test_cpp_baseline_isa_kernels_match_reference():
    # ATEN_CPU_CAPABILITY=default makes csrc/cpu/linear_logprobs.cpp pick the baseline-ISA copy of the kernels; the
    # rest of this file runs the AVX2 copy wherever the CPU has AVX2.
    code = """
        import torch
        from tests.ops.linear_logprobs_cases import inputs
        from tests.ops.test_linear_logprobs import _check_gradients
        hidden, weight, targets = inputs(13, 9001, 20, torch.float32, seed=0)
        _check_gradients(hidden, weight, targets, 0.7, "logprobs+entropy", torch.float32, "cpp")
        print("ok")
        """
    assert run_at_baseline_isa(code).stdout.strip() == "ok"


@pytest.mark.ext
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpp_opcheck(dtype):
    load_extension()
    hidden, weight, targets = _inputs(5, 257, 12, dtype, seed=1)
    torch.library.opcheck(
        torch.ops.tao_engine.linear_logprobs.default,
        (hidden.requires_grad_(), weight.requires_grad_(), targets, 0.7),
    )
    _, entropy, lse = torch.ops.tao_engine.linear_logprobs(hidden.detach(), weight.detach(), targets, 0.7)
    grads = (torch.randn(5), torch.randn(5))
    for need_hidden, need_weight in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(
            torch.ops.tao_engine.linear_logprobs_backward.default,
            (*grads, hidden.detach(), weight.detach(), targets, lse, entropy, 0.7, need_hidden, need_weight),
        )


@pytest.mark.ext
def test_cpp_dispatch():
    hidden, weight, targets = _inputs(3, 40, 8, torch.float32, seed=5)
    assert all_ops()["linear_logprobs"].describe("cpu") == "cpp"
    with pytest.raises(BackendUnavailableError, match="float32, bfloat16 or float16"):
        ops.linear_logprobs(hidden.double(), weight.double(), targets, backend="cpp")
    # Automatic resolution runs the reference for what the kernels do not take (fp64), cpp for the rest.
    ref_logprobs, _ = _reference64(hidden, weight, targets, 1.0)
    inputs = dict(hidden=hidden, weight=weight, targets=targets)
    check("linear_logprobs", ops.linear_logprobs(hidden.double(), weight.double(), targets), ref_logprobs, **inputs)
    check("linear_logprobs", ops.linear_logprobs(hidden, weight, targets.int()), ref_logprobs, **inputs)
    # The reference is the specification; it matches fp64 too.
    check("linear_logprobs", linear_logprobs_reference(hidden, weight, targets), ref_logprobs, **inputs)
