"""apply_rotary (tao_engine/ops/rotary.py) on every CPU backend against fp64: forward and gradients for odd token,
head and head_dim counts (D / 2 not a multiple of the vector width), strided q/k views, half dtypes; real RoPE cos/sin
and arbitrary ones (the two halves differ); bounds from the suite's table (tests/tolerances.py); the cpp op's
registrations (opcheck)."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.layers.rotary import RotaryEmbedding
from tao_engine.ops.extension import load_extension
from tao_engine.ops.rotary import apply_rotary_reference
from tests.ops.conftest import backends
from tests.tolerances import check

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
CASES = [(1, 1, 1, 2), (7, 9, 3, 64), (129, 4, 2, 130), (5, 3, 1, 22)]  # (tokens, Hq, Hkv, D)


@pytest.fixture(params=backends("torch", "cpp"))
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _inputs(tokens, hq, hkv, d, dtype, seed, real_rope=True):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(tokens, hq, d, generator=gen).to(dtype)
    k = (torch.randn(tokens, hkv, d, generator=gen) * 2).to(dtype)
    if real_rope:
        cos, sin = RotaryEmbedding(d, 10000.0)(torch.randint(0, 4099, (tokens,), generator=gen))
    else:
        cos, sin = torch.randn(tokens, d, generator=gen), torch.randn(tokens, d, generator=gen)
    return q, k, cos, sin


def _check(q, k, cos, sin, q_out, k_out):
    ref_q, ref_k = apply_rotary_reference(q.double(), k.double(), cos.double(), sin.double())
    assert q_out.dtype == q.dtype and q_out.shape == q.shape and k_out.shape == k.shape
    check("apply_rotary", q_out, ref_q, x=q, cos=cos, sin=sin)
    check("apply_rotary", k_out, ref_k, x=k, cos=cos, sin=sin)


@pytest.mark.parametrize("real_rope", [True, False], ids=["rope", "arbitrary"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_fp64(backend, case, dtype, real_rope):
    q, k, cos, sin = _inputs(*case, dtype, seed=sum(case), real_rope=real_rope)
    _check(q, k, cos, sin, *ops.apply_rotary(q, k, cos, sin, backend=backend))


def test_strided_views(backend):
    gen = torch.Generator().manual_seed(8)
    qkv = torch.randn(7, (4 + 2 * 2) * 64, generator=gen)  # a fused projection's output
    q = qkv[:, : 4 * 64].view(7, 4, 64)  # tokens strided, heads contiguous
    k = torch.randn(2, 7, 64, generator=gen).transpose(0, 1)  # [7, 2, 64] with token stride 64, head stride 448
    cos, sin = RotaryEmbedding(64, 10000.0)(torch.arange(7))
    q_out, k_out = ops.apply_rotary(q, k, cos, sin, backend=backend)
    _check(q, k, cos, sin, q_out, k_out)
    q_odd = torch.randn(7, 4, 128, generator=gen)[..., ::2]  # D not unit-stride: copied first
    _check(q_odd, k, cos, sin, *ops.apply_rotary(q_odd, k, cos, sin, backend=backend))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_gradients_match_fp64(backend, case, dtype):
    q, k, cos, sin = _inputs(*case, dtype, seed=5 + sum(case), real_rope=False)
    q.requires_grad_()
    k.requires_grad_()
    q_out, k_out = ops.apply_rotary(q, k, cos, sin, backend=backend)
    gen = torch.Generator().manual_seed(3)
    g_q = torch.randn(q_out.shape, generator=gen).to(dtype)
    g_k = torch.randn(k_out.shape, generator=gen).to(dtype)
    torch.autograd.backward((q_out, k_out), (g_q, g_k))
    q64, k64 = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    torch.autograd.backward(apply_rotary_reference(q64, k64, cos.double(), sin.double()), (g_q.double(), g_k.double()))
    check("apply_rotary", q.grad, q64.grad, x=g_q, cos=cos, sin=sin, transpose=True)
    check("apply_rotary", k.grad, k64.grad, x=g_k, cos=cos, sin=sin, transpose=True)


def test_gradient_of_one_output_alone(backend):
    q, k, cos, sin = _inputs(5, 3, 1, 22, torch.float32, seed=1)
    q.requires_grad_()
    k.requires_grad_()
    q_out, _ = ops.apply_rotary(q, k, cos, sin, backend=backend)
    q_out.sum().backward()
    assert q.grad is not None and (k.grad is None or torch.equal(k.grad, torch.zeros_like(k)))


@pytest.mark.ext
def test_cpp_opcheck():
    load_extension()
    q, k, cos, sin = _inputs(5, 3, 1, 22, torch.float32, seed=2)
    args = (q.requires_grad_(), k.requires_grad_(), cos, sin)
    torch.library.opcheck(torch.ops.tao_engine.apply_rotary.default, args)


def test_odd_head_dim_is_refused(backend):
    q, k = torch.randn(2, 1, 5), torch.randn(2, 1, 5)
    cos, sin = torch.randn(2, 5), torch.randn(2, 5)
    if backend == "cpp":
        with pytest.raises(Exception, match="even"):
            ops.apply_rotary(q, k, cos, sin, backend="cpp")
