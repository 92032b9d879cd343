"""The `cpp` backend of token_logprobs (csrc/cpu/token_logprobs*.{h,cpp}) against fp64 log_softmax: forward,
backward, edge values, both per-ISA kernel copies, the op registrations (opcheck, torch.compile) and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.extension import extension_status, load_extension
from tao_engine.ops.registry import BackendUnavailableError, all_ops
from tests.tolerances import check

pytestmark = pytest.mark.ext

SHAPES = [(1, 7), (7, 129), (33, 4099), (5, 49152)]  # (rows, vocab): 4099 = 4 tiles of 1024 + a ragged tail
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TEMPERATURES = [1.0, 0.7, 1.3]


@pytest.fixture(scope="module", autouse=True)
def _extension() -> None:
    loaded, why = extension_status()
    if not loaded:
        pytest.skip(f"tao_engine._C is not built: {why}")


def _reference64(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    # The specification in fp64 (token_logprobs_reference itself computes in fp32).
    return torch.log_softmax(logits.double() / temperature, dim=-1).gather(-1, targets[:, None]).squeeze(-1)


def _inputs(rows: int, vocab: int, dtype: torch.dtype, seed: int, scale: float = 3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=gen) * scale).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    return logits, targets


def _assert_matches(out: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> None:
    ref = _reference64(logits, targets, temperature)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    check("token_logprobs", out, ref, logits=logits, targets=targets, temperature=temperature)
    assert (out <= 0).all(), "log-probs must never be positive"


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "vocab"), SHAPES)
def test_forward_matches_fp64_reference(rows, vocab, dtype, temperature):
    logits, targets = _inputs(rows, vocab, dtype, seed=rows * 100003 + vocab + int(temperature * 10))
    out = ops.token_logprobs(logits, targets, temperature, backend="cpp")
    _assert_matches(out, logits, targets, temperature)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_logits(dtype):
    rows, vocab = 9, 4099
    gen = torch.Generator().manual_seed(11)
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    wide = (torch.randn(rows, vocab + 37, generator=gen) * 3).to(dtype)
    column_slice = wide[:, 5 : 5 + vocab]  # rows vocab + 37 apart, read in place; start not vector-aligned
    transposed = (torch.randn(vocab, rows, generator=gen) * 3).to(dtype).t()  # last dim strided: copied
    every_other_row = (torch.randn(2 * rows, vocab, generator=gen) * 3).to(dtype)[::2]
    for logits in (column_slice, transposed, every_other_row):
        assert not logits.is_contiguous()
        out = ops.token_logprobs(logits, targets, 0.7, backend="cpp")
        _assert_matches(out, logits, targets, 0.7)


def test_integer_targets_of_any_width():
    logits, targets = _inputs(6, 300, torch.float32, seed=3)
    out = ops.token_logprobs(logits, targets.to(torch.int32), 1.3, backend="cpp")
    _assert_matches(out, logits, targets, 1.3)


def test_edge_values():
    vocab = 4099
    logits, targets = _inputs(6, vocab, torch.float32, seed=5)
    logits[0, :2048] = float("-inf")  # the first two tiles hold only -inf (masked vocabulary)
    targets[0] = 3000
    logits[1] = 0.0
    logits[1, targets[1]] = 1000.0  # one token takes all the mass: log-prob rounds to 0, never above
    logits[2] *= 100.0  # most exp(x - max) underflow
    logits[3, ::2] = float("-inf")
    targets[3] = 1
    out = ops.token_logprobs(logits[:4], targets[:4], 1.0, backend="cpp")
    _assert_matches(out, logits[:4], targets[:4], 1.0)
    assert out[1].item() == 0.0

    logits[4, 17] = float("nan")
    logits[5, targets[5]] = float("-inf")
    out = ops.token_logprobs(logits[4:], targets[4:], 1.0, backend="cpp")
    assert torch.isnan(out[0]), "a NaN logit must make its row's log-prob NaN, as in the reference"
    assert out[1].item() == float("-inf")


def test_empty_batch():
    out = ops.token_logprobs(torch.randn(0, 50), torch.zeros(0, dtype=torch.long), 1.0, backend="cpp")
    assert out.shape == (0,) and out.dtype == torch.float32


def test_baseline_isa_kernels_match_reference():
    # ATEN_CPU_CAPABILITY=default makes ATen, and so csrc/cpu/token_logprobs.cpp, pick the baseline-ISA copy of the
    # kernels; the rest of this file runs the AVX2 copy wherever the CPU has AVX2.
    code = textwrap.dedent(
        """
        import torch
        from tao_engine import ops
        from tao_engine.ops.extension import load_extension
        from tests.tolerances import check
        assert load_extension() is not None
        assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
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
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "vocab"), [(7, 129), (33, 4099)])
def test_gradient_matches_fp64_autograd(rows, vocab, dtype, temperature):
    logits, targets = _inputs(rows, vocab, dtype, seed=rows + vocab)
    upstream = torch.randn(rows, generator=torch.Generator().manual_seed(rows))  # a non-uniform grad_out
    leaf = logits.clone().requires_grad_()
    (ops.token_logprobs(leaf, targets, temperature, backend="cpp") * upstream).sum().backward()
    ref_leaf = logits.double().requires_grad_()
    (_reference64(ref_leaf, targets, temperature) * upstream.double()).sum().backward()
    assert leaf.grad.dtype == dtype and leaf.grad.shape == logits.shape
    check("token_logprobs_grad", leaf.grad, ref_leaf.grad, logits=logits, targets=targets, upstream=upstream,
          temperature=temperature)


def test_gradient_through_a_column_slice():
    gen = torch.Generator().manual_seed(8)
    wide = torch.randn(5, 600, generator=gen, requires_grad=True)
    targets = torch.randint(0, 590, (5,), generator=gen)
    ops.token_logprobs(wide[:, 3:593], targets, 1.3, backend="cpp").sum().backward()
    ref_wide = wide.detach().double().requires_grad_()
    _reference64(ref_wide[:, 3:593], targets, 1.3).sum().backward()
    check("token_logprobs_grad", wide.grad[:, 3:593], ref_wide.grad[:, 3:593], logits=wide[:, 3:593],
          targets=targets, upstream=torch.ones(5), temperature=1.3)
    assert (wide.grad[:, :3] == 0).all() and (wide.grad[:, 593:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(dtype):
    load_extension()
    logits, targets = _inputs(5, 257, dtype, seed=1)
    torch.library.opcheck(torch.ops.tao_engine.token_logprobs.default, (logits.requires_grad_(), targets, 0.7))
    grad_out = torch.randn(5)
    torch.library.opcheck(
        torch.ops.tao_engine.token_logprobs_backward.default, (grad_out, logits.detach(), targets, 0.7)
    )


def test_torch_compile_traces_the_op_fullgraph():
    # aot_eager traces through the fake kernels and the autograd formula without generating code. The op is called
    # directly: this checks the registrations of tao_engine/ops/_C_registrations.py, not the dispatch layer.
    load_extension()

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -torch.ops.tao_engine.token_logprobs(logits, targets, 0.7).mean()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    logits, targets = _inputs(6, 301, torch.float32, seed=2)
    leaf = logits.clone().requires_grad_()
    value = compiled(leaf, targets)
    value.backward()
    eager_leaf = logits.clone().requires_grad_()
    loss(eager_leaf, targets).backward()
    # aot_eager runs the very same kernels as eager mode, on the same machine: bit for bit the same.
    assert torch.equal(value, loss(logits, targets))
    assert torch.equal(leaf.grad, eager_leaf.grad)


def test_invalid_input_errors():
    op = torch.ops.tao_engine.token_logprobs
    load_extension()
    logits, targets = _inputs(4, 50, torch.float32, seed=4)
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


def test_supports_rejects_what_the_kernels_do_not_handle():
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
