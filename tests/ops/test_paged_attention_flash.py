"""flash-attn behind the paged attention contracts (tao_engine/ops/paged_attention_flash.py): its answers against the
fp64 reference on a CUDA host with flash_attn installed (skipped elsewhere), and, everywhere, that its probe and
`supports` refuse what flash-attn cannot run with a reason."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tao_engine.ops import paged_attention_flash as flash
from tao_engine.ops.paged_attention import paged_decode_attention_reference, paged_prefill_attention_reference
from tests.tolerances import check

needs_flash_attn = pytest.mark.skipif(
    importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available(),
    reason="needs flash_attn and a CUDA device",
)
BLOCK_SIZE = 256  # flash-attn 2's paged KV takes multiples of 256 only


def paged_inputs(seqs, hq, hkv, d, dtype, device, seed):
    """q [N, Hq, D] packed, caches of shuffled blocks, cu_seqlens_q, tables [B, M] (padding 0) and context lens."""
    gen = torch.Generator().manual_seed(seed)
    needed = [-(-ctx // BLOCK_SIZE) for ctx, _ in seqs]
    num_blocks = sum(needed) + 1
    order = torch.randperm(num_blocks, generator=gen)
    tables = torch.zeros(len(seqs), max(needed) + 1, dtype=torch.int32)
    start = 0
    for row, n in enumerate(needed):
        tables[row, :n] = order[start : start + n].int()
        start += n
    k_cache = torch.randn(num_blocks, BLOCK_SIZE, hkv, d, generator=gen)
    v_cache = torch.randn(num_blocks, BLOCK_SIZE, hkv, d, generator=gen)
    q_lens = [q_len for _, q_len in seqs]
    q = torch.randn(sum(q_lens), hq, d, generator=gen)
    cu = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    lens = torch.tensor([ctx for ctx, _ in seqs], dtype=torch.int32)
    return q.to(device, dtype), k_cache.to(device, dtype), v_cache.to(device, dtype), *(
        t.to(device) for t in (cu, tables, lens)
    )


@needs_flash_attn
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_prefill_matches_fp64_reference(dtype):
    seqs = [(13, 13), (300, 7), (257, 1), (520, 129)]  # whole prompts and extends of a cached prefix
    q, k, v, cu, tables, lens = paged_inputs(seqs, 6, 2, 64, dtype, "cuda", seed=1)
    out = flash.prefill(q, k, v, cu, tables, lens, 129, 520, 0.125)
    expected = paged_prefill_attention_reference(q.double(), k.double(), v.double(), cu, tables, lens, 129, 520, 0.125)
    assert out.dtype == dtype and out.shape == q.shape
    # flash-attn: half dots (half q and weights) accumulated in fp32, one rounding into the output.
    check("paged_attention", out, expected, q=q, k_cache=k, v_cache=v, tables=tables, lens=lens.cpu(),
          q_lens=[q_len for _, q_len in seqs], scale=0.125, output=dtype, half=dtype)


@needs_flash_attn
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_decode_matches_fp64_reference(dtype):
    seqs = [(1, 1), (300, 1), (520, 1)]
    q, k, v, _, tables, lens = paged_inputs(seqs, 6, 2, 64, dtype, "cuda", seed=2)
    out = flash.decode(q, k, v, tables, lens, 0.125)
    expected = paged_decode_attention_reference(q.double(), k.double(), v.double(), tables, lens, 0.125)
    assert out.dtype == dtype and out.shape == q.shape
    check("paged_attention", out, expected, q=q, k_cache=k, v_cache=v, tables=tables, lens=lens.cpu(),
          q_lens=[1] * len(seqs), scale=0.125, output=dtype, half=dtype)


def test_probe_says_why_it_cannot_run_here():
    ok, why = flash.flash_attn_probe()
    if importlib.util.find_spec("flash_attn") is None:
        assert not ok and "flash_attn is not installed" in why
    elif not torch.cuda.is_available():
        assert not ok and "CUDA" in why


def test_supports_refuses_what_flash_attn_cannot_run():
    # Checked on CPU tensors of the right shapes: each refusal names its reason before any flash_attn call.
    q, k, v, cu, tables, lens = paged_inputs([(13, 13), (300, 7)], 6, 2, 64, torch.bfloat16, "cpu", seed=3)
    ok, why = flash.prefill_supports(q, k, v, cu, tables, lens, 13, 300, 0.125)
    assert not ok and "CUDA device" in why
    ok, why = flash.decode_supports(q[:2], k, v, tables, lens, 0.125)
    assert not ok and "CUDA device" in why
    if not torch.cuda.is_available():
        return
    q, k, v, cu, tables, lens = (t.cuda() for t in (q, k, v, cu, tables, lens))
    args = (cu, tables, lens, 13, 300, 0.125)
    assert flash.prefill_supports(q, k, v, *args) == (True, "")
    ok, why = flash.prefill_supports(q.float(), k, v, *args)
    assert not ok and "share one dtype" in why
    ok, why = flash.prefill_supports(q, k[:, :16].contiguous(), v[:, :16].contiguous(), *args)
    assert not ok and "multiple of 256" in why
    ok, why = flash.prefill_supports(q[..., :60], k[..., :60], v[..., :60], *args)
    assert not ok and "multiple of 8" in why


def test_asking_for_flash_attn_where_it_cannot_run_names_the_reason():
    # Registered outside the default order: never picked quietly, and an explicit request without flash_attn (or on
    # CPU tensors) must refuse with the probe's or supports' reason instead of running something else.
    from tao_engine import ops
    from tao_engine.ops.registry import BackendUnavailableError

    q, k_cache, v_cache, cu, tables, lens = paged_inputs([(5, 2)], 4, 2, 32, torch.float32, "cpu", seed=3)
    with pytest.raises(BackendUnavailableError, match="flash_attn"):
        ops.paged_prefill_attention(q, k_cache, v_cache, cu, tables, lens, 2, 5, 0.125, backend="flash_attn")
    default = ops.paged_prefill_attention(q, k_cache, v_cache, cu, tables, lens, 2, 5, 0.125)
    expected = paged_prefill_attention_reference(q.double(), k_cache.double(), v_cache.double(), cu, tables, lens, 2, 5,
                                                 0.125)
    check("paged_attention", default, expected, q=q, k_cache=k_cache, v_cache=v_cache, tables=tables, lens=lens,
          q_lens=[2], scale=0.125, output=torch.float32)
