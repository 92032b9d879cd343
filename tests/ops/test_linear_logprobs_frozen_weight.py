"""The frozen-weight path of linear_logprobs on the `cpp` (csrc/cpu/linear_logprobs_frozen_weight.cpp and its
autograd formula in ops/linear_logprobs.py), `triton` (kernels/linear_logprobs.py, LinearLogprobsFrozenWeightFunction)
and `cuda` backends: when hidden requires grad and the weight does not (a frozen LM head, as under LoRA), the forward
also returns E_p[W] and Cov_p(z, W) per row and the backward is elementwise. Checked against fp64 autograd of
log_softmax(hidden @ W.T / T) at odd shapes, with random upstream gradients for both outputs, the vocabulary in one
block or several (Triton's tiles forced small, so the weight sums are rescaled across blocks); the path is taken
exactly when it should be, W gets no gradient, nothing [N, V]-sized is saved, and the op's registrations pass opcheck
(including the recomputing fallback for a trainable weight when the op is called directly)."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.extension import cuda_backend_probe, load_extension
from tao_engine.ops.linear_logprobs import takes_frozen_weight_path
from tao_engine.ops.triton_support import kernel_module
from tests.error_bounds import assert_within_bound, linear_logprobs_grad_bounds
from tests.helpers import run_at_baseline_isa
from tests.ops.conftest import backends, cases
from tests.ops.linear_logprobs_cases import inputs as _inputs
from tests.ops.linear_logprobs_cases import reference64 as _reference64
from tests.tolerances import check

# The autograd node each backend's frozen-weight path leaves on its outputs.
FROZEN_NODE = {"cpp": "linear_logprobs_frozen_weight", "cuda": "linear_logprobs_frozen_weight",
               "triton": "FrozenWeight"}
# (N, V, H): odd sizes; for N <= 512 a cpp vocabulary block is 8192 rows, so V = 9001 spans two blocks (the row max
# moves into the second block for some rows, which rescales the weight sums). Triton's interpreter is slow: small N.
CPU_SHAPES = [(1, 1000, 33), (7, 4099, 64), (129, 1000, 33), (129, 4099, 64), (7, 9001, 16)]
TRITON_SHAPES = [(1, 7, 5, 0.7), (7, 129, 64, 1.3), (33, 300, 16, 1.0)]  # (N, V, H, T)
TERMS = ["logprobs", "entropy", "logprobs+entropy"]
DTYPES = [torch.float32, torch.bfloat16]
KERNELS = backends("cpp", "triton")


def _upstream(rows: int, terms: str, seed: int, device="cpu") -> tuple[torch.Tensor | None, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    g_lp = torch.randn(rows, generator=gen).to(device)
    g_ent = torch.randn(rows, generator=gen).to(device)
    return (g_lp if "logprobs" in terms else None), (g_ent if "entropy" in terms else None)


def _loss(g_lp, g_ent, logprobs, entropy):
    parts = [(g.to(out.dtype) * out).sum() for g, out in ((g_lp, logprobs), (g_ent, entropy)) if g is not None]
    return sum(parts)


def _run(hidden, weight, targets, temperature, return_entropy, backend, blocks=None):
    """(logprobs, entropy or None) through ops, or through the Triton kernel module with forced (chunk, block_v)."""
    if blocks is not None:
        module = kernel_module("linear_logprobs")
        return module.linear_logprobs(hidden, weight, targets, temperature, *blocks, entropy_grad=return_entropy)
    out = ops.linear_logprobs(hidden, weight, targets, temperature, return_entropy=return_entropy, backend=backend)
    return out if return_entropy else (out, None)


def _check_frozen(hidden, weight, targets, temperature, terms, dtype, seed, backend, blocks=None):
    g_lp, g_ent = _upstream(hidden.shape[0], terms, seed, hidden.device)
    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone()  # frozen
    logprobs, entropy = _run(h, w, targets, temperature, "entropy" in terms, backend, blocks)
    assert FROZEN_NODE[backend] in type(logprobs.grad_fn).__name__
    ref_logprobs, ref_entropy = _reference64(hidden, weight, targets, temperature)
    check("linear_logprobs", logprobs, ref_logprobs, hidden=hidden, weight=weight, targets=targets,
          temperature=temperature)
    if "entropy" in terms:
        check("linear_entropy", entropy, ref_entropy, hidden=hidden, weight=weight, temperature=temperature)
    _loss(g_lp, g_ent, logprobs, entropy).backward()
    assert w.grad is None
    assert h.grad.dtype == hidden.dtype and h.grad.shape == hidden.shape
    ref, bound, _, _ = linear_logprobs_grad_bounds(hidden, weight, targets, temperature, g_lp, g_ent, dtype)
    assert_within_bound(h.grad, ref, bound, f"linear_logprobs {backend} frozen-weight grad_hidden")


@pytest.mark.parametrize("terms", TERMS)
@pytest.mark.parametrize(("backend", "rows", "vocab", "width", "temperature"), [
    *cases("cpp", *((*shape, t) for shape in CPU_SHAPES for t in (0.7, 1.3))), *cases("triton", *TRITON_SHAPES)])
def test_frozen_weight_gradient_matches_fp64_autograd(backend, device, rows, vocab, width, temperature, terms):
    seed = rows * 31 + vocab + width
    hidden, weight, targets = _inputs(rows, vocab, width, torch.float32, seed, device=device)
    _check_frozen(hidden, weight, targets, temperature, terms, torch.float32, seed, backend)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("backend", "rows", "vocab", "width"), [*cases("cpp", (7, 4099, 33)),
                                                                 *cases("triton", (7, 129, 16))])
def test_frozen_weight_low_precision_and_non_contiguous(backend, device, rows, vocab, width, dtype):
    hidden, weight, targets = _inputs(rows, vocab, width, dtype, seed=5, device=device)
    weight_t = weight.t().contiguous().t()  # a column-major head (a transposed tied embedding)
    assert not weight_t.is_contiguous()
    for w in (weight, weight_t):
        _check_frozen(hidden, w, targets, 0.7, "logprobs+entropy", dtype, 6, backend)


@pytest.mark.parametrize("backend", backends("cpp"))
def test_frozen_weight_row_and_vocabulary_blocks(backend):
    # Two row blocks (4096 + 1) and two vocabulary blocks (1024 + 76), with some rows' max in the second one.
    hidden, weight, targets = _inputs(4097, 1100, 5, torch.float32, seed=3)
    weight[1050] = hidden[:50].mean(0) * 4.0
    targets[:3] = 1050
    # The planted row makes gradient rows of magnitude ~20 where W[target] - E_p[W] cancels: the bound sums the
    # magnitudes of both terms, not of their difference.
    _check_frozen(hidden, weight, targets, 0.7, "logprobs+entropy", torch.float32, 4, backend)


@pytest.mark.parametrize(("chunk", "block_v"), [(50, 16), (129, 32)])  # ragged blocks and tiles
@pytest.mark.parametrize("backend", backends("triton"))
def test_frozen_weight_several_blocks_and_tiles(backend, device, chunk, block_v):
    # The row max sits in a later block for some rows, so the weight sums are rescaled between blocks.
    hidden, weight, targets = _inputs(9, 301, 16, torch.float32, seed=chunk + block_v, device=device)
    weight[260] = hidden[:4].mean(0) * 4.0
    targets[:2] = 260
    _check_frozen(hidden, weight, targets, 0.7, "logprobs+entropy", torch.float32, 9, backend, (chunk, block_v))


@pytest.mark.parametrize("backend", KERNELS)
def test_trainable_weight_keeps_the_recomputing_path(backend, device):
    hidden, weight, targets = _inputs(129, 1000, 33, torch.float32, seed=8, device=device)
    g_lp, g_ent = _upstream(129, "logprobs+entropy", seed=9, device=device)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    assert not takes_frozen_weight_path(h, w)
    logprobs, entropy = ops.linear_logprobs(h, w, targets, 1.3, return_entropy=True, backend=backend)
    assert FROZEN_NODE[backend] not in type(logprobs.grad_fn).__name__
    _loss(g_lp, g_ent, logprobs, entropy).backward()
    ref_h, bound_h, ref_w, bound_w = linear_logprobs_grad_bounds(hidden, weight, targets, 1.3, g_lp, g_ent,
                                                                   torch.float32)
    assert_within_bound(h.grad, ref_h, bound_h, f"linear_logprobs {backend} grad_hidden")
    assert_within_bound(w.grad, ref_w, bound_w, f"linear_logprobs {backend} grad_weight")


def test_path_choice():
    hidden, weight, _ = _inputs(3, 40, 8, torch.float32, seed=10)
    h = hidden.requires_grad_()
    assert takes_frozen_weight_path(h, weight)
    assert not takes_frozen_weight_path(hidden.detach(), weight)  # nothing to differentiate
    assert not takes_frozen_weight_path(h, weight.clone().requires_grad_())
    with torch.no_grad():
        assert not takes_frozen_weight_path(h, weight)  # the extra GEMM would be wasted


@pytest.mark.parametrize("backend", KERNELS)
def test_frozen_weight_empty_batch_and_nan_row(backend, device):
    weight = torch.randn(10, 8, device=device)
    hidden = torch.zeros(0, 8, device=device, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.long, device=device)
    logprobs, entropy = ops.linear_logprobs(hidden, weight, empty, 1.0, True, backend=backend)
    (logprobs.sum() + entropy.sum()).backward()
    assert hidden.grad.shape == (0, 8)
    # A NaN input poisons its own row's gradient only.
    hidden, weight, targets = _inputs(5, 9001, 8, torch.float32, seed=15, device=device)
    hidden[2, 3] = float("nan")
    h = hidden.clone().requires_grad_()
    logprobs, entropy = ops.linear_logprobs(h, weight, targets, 1.0, return_entropy=True, backend=backend)
    assert logprobs[2].isnan() and entropy[2].isnan()
    (logprobs.nan_to_num() + entropy.nan_to_num()).sum().backward()
    keep = torch.tensor([0, 1, 3, 4], device=device)
    assert h.grad[2].isnan().all() and h.grad[keep].isfinite().all()


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_entropy_has_no_gradient_without_entropy_grad(backend, device):
    hidden, weight, targets = _inputs(5, 40, 8, torch.float32, seed=4, device=device)
    logprobs, entropy = _run(hidden.clone().requires_grad_(), weight, targets, 1.0, False, backend, blocks=(16, 16))
    assert logprobs.requires_grad and not entropy.requires_grad
    _, ref_entropy = _reference64(hidden, weight, targets, 1.0)
    check("linear_entropy", entropy, ref_entropy, hidden=hidden, weight=weight)


@pytest.mark.ext
def test_frozen_path_saves_no_vocabulary_sized_tensor():
    rows, vocab, width = 129, 4099, 33
    hidden, weight, targets = _inputs(rows, vocab, width, torch.float32, seed=11)
    h = hidden.clone().requires_grad_()
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logprobs, entropy = ops.linear_logprobs(h, weight, targets, 0.7, return_entropy=True, backend="cpp")
    assert FROZEN_NODE["cpp"] in type(logprobs.grad_fn).__name__
    # The weight itself (an input, not an allocation), targets, [N] statistics and two [N, H] row moments.
    assert any(t is weight for t in saved)
    made = [t for t in saved if t is not weight]
    assert max(t.numel() for t in made) == rows * width
    assert sum(t.numel() for t in made) <= 2 * rows * width + 4 * rows
    # The op's own outputs: nothing [N, V] either, and no Cov_p(z, W) when the entropy's gradient is not wanted.
    outputs = torch.ops.tao_engine.linear_logprobs_frozen_weight(hidden, weight, targets, 0.7, False)
    assert [tuple(t.shape) for t in outputs] == [(rows,), (rows,), (rows,), (rows, width), (0,)]
    (logprobs.sum() + entropy.sum()).backward()
    assert h.grad.shape == (rows, width)


@pytest.mark.ext
def test_entropy_without_entropy_grad_is_not_differentiable():
    hidden, weight, targets = _inputs(5, 100, 8, torch.float32, seed=12)
    h = hidden.clone().requires_grad_()
    logprobs, entropy, lse, mean_weight, entropy_weight = torch.ops.tao_engine.linear_logprobs_frozen_weight(
        h, weight, targets, 1.0, False
    )
    assert logprobs.requires_grad
    assert not any(t.requires_grad for t in (entropy, lse, mean_weight, entropy_weight))
    # With entropy_grad both are differentiable, and mean_weight is E_p[W].
    logprobs, entropy, _, mean_weight, _ = torch.ops.tao_engine.linear_logprobs_frozen_weight(
        h, weight, targets, 1.0, True
    )
    assert logprobs.requires_grad and entropy.requires_grad
    probs = torch.softmax(hidden.double() @ weight.double().T, dim=-1)
    # E_p[W] is attention of each hidden row over the vocabulary, W serving as both keys and values.
    check("attention", mean_weight, probs @ weight.double(), q=hidden[:, None], k=weight[:, None],
          v=weight[:, None], visible=torch.ones(5, 100, dtype=torch.bool), scale=1.0, output=torch.float32)


@pytest.mark.ext
def test_direct_call_with_trainable_weight_falls_back_to_recomputation():
    hidden, weight, targets = _inputs(7, 300, 16, torch.float32, seed=13)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    g_lp, g_ent = _upstream(7, "logprobs+entropy", seed=14)
    logprobs, entropy, *_ = torch.ops.tao_engine.linear_logprobs_frozen_weight(h, w, targets, 0.7, True)
    _loss(g_lp, g_ent, logprobs, entropy).backward()
    ref_h, bound_h, ref_w, bound_w = linear_logprobs_grad_bounds(hidden, weight, targets, 0.7, g_lp, g_ent,
                                                                   torch.float32)
    assert_within_bound(h.grad, ref_h, bound_h, "grad_hidden")
    assert_within_bound(w.grad, ref_w, bound_w, "grad_weight")


@pytest.mark.ext
@pytest.mark.parametrize("entropy_grad", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpp_opcheck(dtype, entropy_grad):
    load_extension()
    hidden, weight, targets = _inputs(5, 257, 12, dtype, seed=16)
    op = torch.ops.tao_engine.linear_logprobs_frozen_weight.default
    torch.library.opcheck(op, (hidden.clone().requires_grad_(), weight, targets, 0.7, entropy_grad))
    # The recomputing fallback, when the op itself is handed a trainable weight.
    torch.library.opcheck(op, (hidden.clone().requires_grad_(), weight.clone().requires_grad_(), targets, 0.7, True))


@pytest.mark.ext
def test_cpp_baseline_isa_kernels_match_reference():
    # ATEN_CPU_CAPABILITY=default selects the baseline-ISA copy of the row kernels; the rest of this file runs the
    # AVX2 copy wherever the CPU has AVX2.
    code = """
        import torch
        from tests.ops.linear_logprobs_cases import inputs
        from tests.ops.test_linear_logprobs_frozen_weight import _check_frozen
        hidden, weight, targets = inputs(13, 9001, 20, torch.float32, seed=0)
        _check_frozen(hidden, weight, targets, 0.7, "logprobs+entropy", torch.float32, 1, "cpp")
        print("ok")
        """
    assert run_at_baseline_isa(code).stdout.strip() == "ok"


@pytest.mark.parametrize("entropy_grad", [False, True])
@pytest.mark.parametrize("backend", backends("cuda"))
def test_cuda_backend_frozen_weight(backend, device, entropy_grad):
    # The same path in csrc/cuda/linear_logprobs_host.cpp; skipped without a CUDA device and a CUDA build.
    ok, why = cuda_backend_probe()
    if not ok:
        pytest.skip(why)
    hidden, weight, targets = _inputs(129, 40000, 64, torch.float32, seed=17)  # several vocabulary blocks
    hidden, weight, targets = hidden.to(device), weight.to(device), targets.to(device)
    g_lp, g_ent = _upstream(129, "logprobs+entropy", seed=18, device=device)
    h = hidden.clone().requires_grad_()
    logprobs, entropy = ops.linear_logprobs(h, weight, targets, 0.7, return_entropy=True, backend=backend)
    assert FROZEN_NODE[backend] in type(logprobs.grad_fn).__name__
    _loss(g_lp, g_ent if entropy_grad else None, logprobs, entropy).backward()
    ref_logprobs, ref_entropy = _reference64(hidden, weight, targets, 0.7)
    inputs = dict(hidden=hidden, weight=weight, temperature=0.7)
    check("linear_logprobs", logprobs, ref_logprobs, targets=targets, **inputs)
    check("linear_entropy", entropy, ref_entropy, **inputs)
    # fp32 cuBLAS GEMMs (torch leaves TF32 off for matmuls): the bound follows their accumulation over 40000 rows.
    ref, bound, _, _ = linear_logprobs_grad_bounds(hidden, weight, targets, 0.7, g_lp, g_ent if entropy_grad else None,
                                                   torch.float32)
    assert_within_bound(h.grad, ref, bound, "linear_logprobs cuda frozen-weight grad_hidden")
    op = torch.ops.tao_engine.linear_logprobs_frozen_weight.default
    torch.library.opcheck(op, (hidden[:5].clone().requires_grad_(), weight[:257], targets[:5] % 257, 0.7, entropy_grad))
