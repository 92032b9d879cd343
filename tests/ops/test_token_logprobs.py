"""token_logprobs on every backend (torch reference, `cpp` csrc/cpu/token_logprobs*.{h,cpp}, `triton`
kernels/token_logprobs.py) against fp64 log_softmax: forward, backward, edge values, strided and batched layouts;
the cpp op's per-ISA kernel copies and registrations (opcheck, torch.compile); bad input per backend."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.extension import load_extension
from tao_engine.ops.registry import BackendUnavailableError, all_ops
from tests.helpers import run_at_baseline_isa
from tests.ops.conftest import backends
from tests.tolerances import check

BACKENDS = backends("torch", "cpp", "triton")
KERNELS = backends("cpp", "triton")  # the fp32 backward of the table's bound; the reference's is autograd's
# (rows, vocab): 4099 = 4 cpp tiles of 1024 + a ragged tail, and two of triton's 4096-wide chunks
SHAPES = [(1, 7), (1, 129), (1, 4099), (7, 7), (7, 129), (7, 4099), (33, 7), (33, 129), (33, 4099), (5, 49152)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TEMPERATURES = [1.0, 0.7, 1.3]


def _reference64(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    # The specification in fp64 (token_logprobs_reference itself computes in fp32).
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)
    return logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)


def _inputs(shape: tuple[int, ...], vocab: int, dtype: torch.dtype, seed: int, device="cpu", scale: float = 3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(*shape, vocab, generator=gen) * scale).to(dtype).to(device)
    targets = torch.randint(0, vocab, shape, generator=gen).to(device)
    return logits, targets


def _assert_matches(out: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> None:
    ref = _reference64(logits, targets, temperature)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    check("token_logprobs", out, ref, logits=logits, targets=targets, temperature=temperature)
    assert (out <= 0).all(), "log-probs must never be positive"


def _assert_gradient(logits, targets, temperature, backend, upstream=None, dtype=None):
    """Backward of `backend` through `logits` (any layout) with `upstream` (default: ones, a stride-0 expanded
    gradient through .sum()) against fp64 autograd; returns the leaf's gradient."""
    leaf = logits.detach().requires_grad_()
    out = ops.token_logprobs(leaf, targets, temperature, backend=backend)
    (out.sum() if upstream is None else (out * upstream).sum()).backward()
    ref_leaf = logits.detach().double().requires_grad_()
    ref = _reference64(ref_leaf, targets, temperature)
    (ref.sum() if upstream is None else (ref * upstream.double()).sum()).backward()
    assert leaf.grad.dtype == logits.dtype and leaf.grad.shape == logits.shape
    upstream = torch.ones(out.shape) if upstream is None else upstream
    check("token_logprobs_grad", leaf.grad, ref_leaf.grad, logits=logits, targets=targets, upstream=upstream,
          temperature=temperature)
    return out, leaf.grad


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "vocab"), SHAPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_matches_fp64_reference(backend, device, rows, vocab, dtype, temperature):
    logits, targets = _inputs((rows,), vocab, dtype, seed=rows * 100003 + vocab + int(temperature * 10),
                              device=device)
    _assert_matches(ops.token_logprobs(logits, targets, temperature, backend=backend), logits, targets, temperature)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_logits(backend, device, dtype):
    rows, vocab = 9, 4099
    gen = torch.Generator().manual_seed(11)
    targets = torch.randint(0, vocab, (rows,), generator=gen).to(device)
    wide = (torch.randn(rows, vocab + 37, generator=gen) * 3).to(dtype).to(device)
    column_slice = wide[:, 5 : 5 + vocab]  # rows vocab + 37 apart, read in place; start not vector-aligned
    transposed = (torch.randn(vocab, rows, generator=gen) * 3).to(dtype).to(device).t()  # last dim strided: copied
    every_other_row = (torch.randn(2 * rows, vocab, generator=gen) * 3).to(dtype).to(device)[::2]
    for logits in (column_slice, transposed, every_other_row):
        assert not logits.is_contiguous()
        _assert_matches(ops.token_logprobs(logits, targets, 0.7, backend=backend), logits, targets, 0.7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_targets_of_any_width(backend, device):
    logits, targets = _inputs((6,), 300, torch.float32, seed=3, device=device)
    out = ops.token_logprobs(logits, targets.to(torch.int32), 1.3, backend=backend)
    _assert_matches(out, logits, targets, 1.3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_values(backend, device):
    vocab = 4099
    logits, targets = _inputs((4,), vocab, torch.float32, seed=5, device=device)
    logits[0, :2048] = float("-inf")  # the first two tiles hold only -inf (masked vocabulary)
    targets[0] = 3000
    logits[1] = 0.0
    logits[1, targets[1]] = 1000.0  # one token takes all the mass: log-prob rounds to 0, never above
    logits[2] *= 100.0  # most exp(x - max) underflow
    logits[3, ::2] = float("-inf")
    targets[3] = 1
    out = ops.token_logprobs(logits, targets, 1.0, backend=backend)
    _assert_matches(out, logits, targets, 1.0)
    assert out[1].item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_logits_empty_batch_and_impossible_targets(backend, device):
    logits, targets = _inputs((2,), 4099, torch.float32, seed=5)
    logits[0, 17] = float("nan")
    logits[1, targets[1]] = float("-inf")
    out = ops.token_logprobs(logits.to(device), targets.to(device), 1.0, backend=backend)
    assert torch.isnan(out[0]), "a NaN logit must make its row's log-prob NaN, as in the reference"
    assert out[1].item() == float("-inf")
    empty = torch.randn(0, 50, device=device, requires_grad=True)
    out = ops.token_logprobs(empty, torch.zeros(0, dtype=torch.long, device=device), 1.0, backend=backend)
    assert out.shape == (0,) and out.dtype == torch.float32
    out.sum().backward()
    assert empty.grad is not None and empty.grad.shape == (0, 50)


@pytest.mark.parametrize("backend", BACKENDS)
def test_logprobs_never_positive_on_peaked_rows(backend, device):
    # Targets that hold (nearly) all the mass, at large scale and low temperature: the exact answer is 0 or -tiny,
    # where rounding could push an unclamped result above 0.
    logits, _ = _inputs((33,), 129, torch.float32, seed=2, device=device, scale=30.0)
    targets = logits.argmax(-1)
    logits[torch.arange(33), targets] += torch.linspace(0.0, 50.0, 33, device=device)
    for temperature in (1.0, 0.3, 1e-3):
        _assert_matches(ops.token_logprobs(logits, targets, temperature, backend=backend), logits, targets,
                        temperature)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "vocab"), [(1, 7), (7, 129), (33, 4099), (7, 4099)])
@pytest.mark.parametrize("backend", KERNELS)
def test_gradient_matches_fp64_autograd(backend, device, rows, vocab, dtype, temperature):
    logits, targets = _inputs((rows,), vocab, dtype, seed=rows + vocab, device=device)
    upstream = torch.randn(rows, generator=torch.Generator().manual_seed(rows)).to(device)  # non-uniform grad_out
    _assert_gradient(logits, targets, temperature, backend, upstream)


@pytest.mark.parametrize("backend", KERNELS)
def test_running_max_grows_in_a_later_chunk(backend, device):
    # The row max sits in the second 4096-wide chunk, so the running sum must be rescaled when the max moves.
    logits, targets = _inputs((7,), 4099, torch.float32, seed=9, device=device)
    logits[:, 4097] += 25.0
    targets[0] = 4097
    out, _ = _assert_gradient(logits, targets, 1.0, backend)
    _assert_matches(out, logits, targets, 1.0)


@pytest.mark.parametrize("backend", KERNELS)
def test_gradient_through_a_column_slice(backend, device):
    gen = torch.Generator().manual_seed(8)
    wide = torch.randn(5, 600, generator=gen).to(device).requires_grad_()
    targets = torch.randint(0, 590, (5,), generator=gen).to(device)
    ops.token_logprobs(wide[:, 3:593], targets, 1.3, backend=backend).sum().backward()
    ref_wide = wide.detach().double().requires_grad_()
    _reference64(ref_wide[:, 3:593], targets, 1.3).sum().backward()
    check("token_logprobs_grad", wide.grad[:, 3:593], ref_wide.grad[:, 3:593], logits=wide[:, 3:593],
          targets=targets, upstream=torch.ones(5), temperature=1.3)
    assert (wide.grad[:, :3] == 0).all() and (wide.grad[:, 593:] == 0).all()


@pytest.mark.parametrize("backend", backends("triton"))
def test_shifted_slices_of_batched_tensors(backend, device):
    # The RL layout: logits [B, T, V] and input ids [B, T]; position t predicts token t + 1.
    logits_bt, ids = _inputs((3, 9), 129, torch.float32, seed=5, device=device)
    logits, targets = logits_bt[:, :-1], ids[:, 1:]  # [3, 8, V], [3, 8]: neither is contiguous
    assert not logits.is_contiguous() and not targets.is_contiguous()
    out, _ = _assert_gradient(logits, targets, 0.9, backend)
    assert out.shape == (3, 8)
    _assert_matches(out, logits, targets, 0.9)


@pytest.mark.parametrize("lead", [(), (2, 3, 4)])
@pytest.mark.parametrize("backend", backends("torch", "triton"))
def test_other_leading_shapes(backend, device, lead):
    logits, targets = _inputs(lead, 33, torch.float32, seed=6, device=device)
    targets = targets.int()  # any integer dtype, as in the reference's `.long()`
    out = ops.token_logprobs(logits, targets, backend=backend)
    assert out.shape == lead
    check("token_logprobs", out, _reference64(logits, targets, 1.0), logits=logits, targets=targets)


@pytest.mark.parametrize("backend", backends("triton"))
def test_out_of_range_targets_give_nan(backend, device):
    # A kernel cannot raise the way the reference's gather does; the bad row is poisoned, the others are untouched.
    logits, targets = _inputs((4,), 17, torch.float32, seed=7, device=device)
    targets[1], targets[2] = 17, -1
    logits.requires_grad_(True)
    out = ops.token_logprobs(logits, targets, backend=backend)
    assert out[1].isnan() and out[2].isnan()
    good = torch.tensor([0, 3], device=device)
    check("token_logprobs", out[good], _reference64(logits[good], targets[good], 1.0), logits=logits[good],
          targets=targets[good])
    # Masking the NaN out of the loss leaves finite gradients: the bad rows get none.
    torch.where(out.isnan(), 0.0, out).sum().backward()
    assert logits.grad.isfinite().all() and (logits.grad[1:3] == 0).all() and (logits.grad[0] != 0).any()


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_bad_arguments(backend, device):
    logits, targets = _inputs((3,), 11, torch.float32, seed=8, device=device)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ops.token_logprobs(logits, targets, 0.0, backend=backend)
    with pytest.raises(BackendUnavailableError, match="float64"):
        ops.token_logprobs(logits.double(), targets, backend=backend)
    with pytest.raises(BackendUnavailableError, match="integer"):
        ops.token_logprobs(logits, targets.float(), backend=backend)
    with pytest.raises(BackendUnavailableError, match="shape"):
        ops.token_logprobs(logits, targets[:2], backend=backend)


@pytest.mark.ext
def test_cpp_baseline_isa_kernels_match_reference():
    # ATEN_CPU_CAPABILITY=default makes ATen, and so csrc/cpu/token_logprobs.cpp, pick the baseline-ISA copy of the
    # kernels; the rest of this file runs the AVX2 copy wherever the CPU has AVX2.
    code = (
        """
        import torch
        from tao_engine import ops
        from tao_engine.ops.extension import load_extension
        from tests.tolerances import check
        assert load_extension() is not None
        gen = torch.Generator().manual_seed(0)
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            wide = (torch.randn(13, 4099 + 3, generator=gen) * 3).to(dtype)
            logits = wide[:, 1:4100].requires_grad_()
            targets = torch.randint(0, 4099, (13,), generator=gen)
            out = ops.token_logprobs(logits, targets, 0.7, backend="cpp")
            out.sum().backward()
            x = logits.detach().double().requires_grad_()
            ref = torch.log_softmax(x / 0.7, -1).gather(-1, targets[:, None]).squeeze(-1)
            ref.sum().backward()
            assert (out <= 0).all()
            check("token_logprobs", out, ref, logits=logits, targets=targets, temperature=0.7)
            check("token_logprobs_grad", logits.grad, x.grad, logits=logits, targets=targets,
                  upstream=torch.ones(13), temperature=0.7)
        print("ok")
        """
    )
    assert run_at_baseline_isa(code).stdout.strip() == "ok"


@pytest.mark.ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(dtype):
    load_extension()
    logits, targets = _inputs((5,), 257, dtype, seed=1)
    torch.library.opcheck(torch.ops.tao_engine.token_logprobs.default, (logits.requires_grad_(), targets, 0.7))
    grad_out = torch.randn(5)
    torch.library.opcheck(
        torch.ops.tao_engine.token_logprobs_backward.default, (grad_out, logits.detach(), targets, 0.7)
    )


@pytest.mark.ext
def test_torch_compile_traces_the_op_fullgraph():
    # aot_eager traces through the fake kernels and the autograd formula without generating code. The op is called
    # directly: this checks the fake kernels and autograd formula registered in tao_engine/ops/logprobs.py, not the
    # dispatch layer.
    load_extension()

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -torch.ops.tao_engine.token_logprobs(logits, targets, 0.7).mean()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    logits, targets = _inputs((6,), 301, torch.float32, seed=2)
    leaf = logits.clone().requires_grad_()
    value = compiled(leaf, targets)
    value.backward()
    eager_leaf = logits.clone().requires_grad_()
    loss(eager_leaf, targets).backward()
    # aot_eager runs the very same kernels as eager mode, on the same machine: bit for bit the same.
    assert torch.equal(value, loss(logits, targets))
    assert torch.equal(leaf.grad, eager_leaf.grad)


@pytest.mark.ext
def test_cpp_invalid_input_errors():
    op = torch.ops.tao_engine.token_logprobs
    load_extension()
    logits, targets = _inputs((4,), 50, torch.float32, seed=4)
    bad = targets.clone()
    bad[2] = 50
    with pytest.raises(RuntimeError, match=r"targets\[2\] = 50 is out of range"):
        op(logits, bad, 1.0)
    bad[2] = -1
    with pytest.raises(RuntimeError, match=r"targets\[2\] = -1 is out of range"):
        op(logits, bad, 1.0)
    with pytest.raises(RuntimeError, match="logits must be 2-D"):
        op(logits[0], targets[:1], 1.0)
    with pytest.raises(RuntimeError, match="targets must be 1-D"):
        op(logits, targets[:3], 1.0)
    with pytest.raises(RuntimeError, match="targets must be int64"):
        op(logits, targets.int(), 1.0)
    with pytest.raises(RuntimeError, match="logits must be float32, bfloat16 or float16"):
        op(logits.double(), targets, 1.0)
    for temperature in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature must be finite and > 0"):
            ops.token_logprobs(logits, targets, temperature, backend="cpp")
    with pytest.raises(RuntimeError, match="grad_out must be float32"):
        torch.ops.tao_engine.token_logprobs_backward(torch.ones(4, dtype=torch.float64), logits, targets, 1.0)


@pytest.mark.ext
def test_cpp_supports_rejects_what_the_kernels_do_not_handle():
    targets = torch.zeros(3, dtype=torch.long)
    with pytest.raises(BackendUnavailableError, match="logits must be float32, bfloat16 or float16"):
        ops.token_logprobs(torch.zeros(3, 10, dtype=torch.int64), targets, backend="cpp")
    with pytest.raises(BackendUnavailableError, match="2-D"):
        ops.token_logprobs(torch.randn(1, 3, 10), targets[None], backend="cpp")
    # Automatic resolution falls back to the reference for such calls, and picks cpp for supported ones.
    logits3d = torch.randn(2, 3, 10)
    targets2d = torch.randint(0, 10, (2, 3))
    expected = _reference64(logits3d.view(6, 10), targets2d.view(6), 1.0).view(2, 3)
    check("token_logprobs", ops.token_logprobs(logits3d, targets2d), expected, logits=logits3d, targets=targets2d)
    assert all_ops()["token_logprobs"].describe("cpu") == "cpp"
