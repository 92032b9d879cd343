"""paged_decode_attention and paged_prefill_attention (torch backend) against an fp64 dense reference that reads
each sequence's keys and values token by token through the slot formula."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tests.tolerances import check

CONTEXT_LENS = [1, 7, 33, 129]
QUERY_LENS = [1, 3, 33, 50]  # prefill: the last q_len tokens of each context (33: the whole context, no prefix)
BLOCK_SIZES = [1, 4, 16]
HEADS = [(6, 2), (4, 4)]  # (Hq, Hkv): GQA and plain multi-head
DTYPES = [torch.float32, torch.bfloat16]
D = 32
LEAK = 1e3  # value of every cache row outside the contexts: one attended by mistake wrecks the output


def paged_cache(context_lens, block_size, hkv, dtype, seed, extra_width=1):
    """Random caches, each sequence owning shuffled (non-contiguous) blocks; tables padded with 0."""
    gen = torch.Generator().manual_seed(seed)
    needed = [-(-n // block_size) for n in context_lens]
    num_blocks = sum(needed) + 3  # a few blocks nobody owns
    order = torch.randperm(num_blocks, generator=gen)
    width = max(needed) + extra_width  # wider than needed: padding entries must be ignored
    tables = torch.zeros(len(context_lens), width, dtype=torch.int32)
    start = 0
    for row, n in enumerate(needed):
        tables[row, :n] = order[start : start + n].int()
        start += n
    k_cache = torch.full((num_blocks, block_size, hkv, D), LEAK)
    v_cache = torch.full((num_blocks, block_size, hkv, D), -LEAK)
    for row, n in enumerate(context_lens):
        slots = slots_of(tables[row], n, block_size)
        k_cache.view(-1, hkv, D)[slots] = torch.randn(n, hkv, D, generator=gen)
        v_cache.view(-1, hkv, D)[slots] = torch.randn(n, hkv, D, generator=gen)
    return k_cache.to(dtype), v_cache.to(dtype), tables, torch.tensor(context_lens, dtype=torch.int32)


def slots_of(table: torch.Tensor, n: int, block_size: int) -> torch.Tensor:
    p = torch.arange(n)
    return table.long()[p // block_size] * block_size + p % block_size


def dense_reference(q, k_cache, v_cache, tables, context_lens, query_lens, scale):
    """fp64; q packed [N, Hq, D], query j of sequence b at position ctx_b - q_len_b + j, causal."""
    hq, hkv, bs = q.shape[1], k_cache.shape[2], k_cache.shape[1]
    out, row = [], 0
    for b, (n, t) in enumerate(zip(context_lens.tolist(), query_lens, strict=True)):
        slots = slots_of(tables[b], n, bs)
        keys = k_cache.reshape(-1, hkv, D)[slots].double().repeat_interleave(hq // hkv, dim=1)  # [n, Hq, D]
        values = v_cache.reshape(-1, hkv, D)[slots].double().repeat_interleave(hq // hkv, dim=1)
        qs = q[row : row + t].double()  # [t, Hq, D]
        scores = torch.einsum("thd,nhd->htn", qs, keys) * scale
        q_pos = torch.arange(n - t, n)
        scores = scores.masked_fill(torch.arange(n)[None, :] > q_pos[:, None], float("-inf"))
        out.append(torch.einsum("htn,nhd->thd", scores.softmax(-1), values))
        row += t
    return torch.cat(out)


def random_q(n: int, hq: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    # Non-contiguous, as q is when it comes out of a fused projection.
    return torch.randn(n, hq, 2 * D, generator=torch.Generator().manual_seed(seed))[..., :D].to(dtype)


def assert_matches(out: torch.Tensor, expected: torch.Tensor, q, k_cache, v_cache, tables, lens, query_lens, scale):
    """Within the derived attention bound; the torch reference runs a half cache's attention through SDPA in that
    dtype, whose fp32 accumulation rounds the weights to it for the P x V product."""
    assert out.dtype == q.dtype and out.shape == expected.shape
    half = None if k_cache.dtype == torch.float32 else k_cache.dtype
    check("paged_attention", out, expected, q=q, k_cache=k_cache, v_cache=v_cache, tables=tables, lens=lens,
          q_lens=query_lens, scale=scale, output=q.dtype, half=half)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("hq", "hkv"), HEADS)
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_decode_matches_dense_reference(block_size, hq, hkv, dtype):
    seed = block_size * 100 + hq
    k_cache, v_cache, tables, lens = paged_cache(CONTEXT_LENS, block_size, hkv, dtype, seed)
    q = random_q(len(CONTEXT_LENS), hq, dtype, seed + 1)
    scale = D**-0.5
    out = ops.paged_decode_attention(q, k_cache, v_cache, tables, lens, scale, backend="torch")
    expected = dense_reference(q, k_cache, v_cache, tables, lens, [1] * len(CONTEXT_LENS), scale)
    assert_matches(out, expected, q, k_cache, v_cache, tables, lens, [1] * len(CONTEXT_LENS), scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("hq", "hkv"), HEADS)
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_prefill_matches_dense_reference(block_size, hq, hkv, dtype):
    seed = block_size * 100 + hq + 7
    k_cache, v_cache, tables, lens = paged_cache(CONTEXT_LENS, block_size, hkv, dtype, seed)
    q = random_q(sum(QUERY_LENS), hq, dtype, seed + 1)
    cu = torch.tensor([0, *torch.tensor(QUERY_LENS).cumsum(0).tolist()], dtype=torch.int32)
    scale = 0.3
    out = ops.paged_prefill_attention(
        q, k_cache, v_cache, cu, tables, lens, max(QUERY_LENS), max(CONTEXT_LENS), scale, backend="torch"
    )
    expected = dense_reference(q, k_cache, v_cache, tables, lens, QUERY_LENS, scale)
    assert_matches(out, expected, q, k_cache, v_cache, tables, lens, QUERY_LENS, scale)


def test_prefill_of_whole_contexts_equals_varlen_attention():
    # With no cached prefix, reading K/V back from the cache must give what attending over them directly gives.
    lens = [7, 33, 1]
    k_cache, v_cache, tables, context_lens = paged_cache(lens, 4, 2, torch.float32, seed=5)
    slots = torch.cat([slots_of(tables[b], n, 4) for b, n in enumerate(lens)])
    k, v = k_cache.view(-1, 2, D)[slots], v_cache.view(-1, 2, D)[slots]
    q = random_q(sum(lens), 6, torch.float32, seed=6)
    cu = torch.tensor([0, 7, 40, 41], dtype=torch.int32)
    paged = ops.paged_prefill_attention(q, k_cache, v_cache, cu, tables, context_lens, 33, 33, 0.2, backend="torch")
    dense = ops.varlen_causal_attention(q, k, v, cu, 33, 0.2, backend="torch")
    expected = dense_reference(q, k_cache, v_cache, tables, context_lens, lens, 0.2)
    assert_matches(paged, expected, q, k_cache, v_cache, tables, context_lens, lens, 0.2)
    assert_matches(dense, expected, q, k_cache, v_cache, tables, context_lens, lens, 0.2)


def test_decode_equals_prefill_of_one_token():
    lens = [5, 18]
    k_cache, v_cache, tables, context_lens = paged_cache(lens, 4, 2, torch.float32, seed=8)
    q = random_q(2, 6, torch.float32, seed=9)
    cu = torch.tensor([0, 1, 2], dtype=torch.int32)
    decode = ops.paged_decode_attention(q, k_cache, v_cache, tables, context_lens, 0.25, backend="torch")
    prefill = ops.paged_prefill_attention(q, k_cache, v_cache, cu, tables, context_lens, 1, 18, 0.25, backend="torch")
    expected = dense_reference(q, k_cache, v_cache, tables, context_lens, [1, 1], 0.25)
    for out in (decode, prefill):  # two fp32 computations of the same thing, each within the bound of fp64
        assert_matches(out, expected, q, k_cache, v_cache, tables, context_lens, [1, 1], 0.25)


def test_bad_inputs_raise_clear_errors():
    k_cache, v_cache, tables, lens = paged_cache([3, 5], 4, 2, torch.float32, seed=10)
    q = random_q(2, 6, torch.float32, seed=11)
    with pytest.raises(ValueError, match="q must be"):
        ops.paged_decode_attention(q[:, :5], k_cache, v_cache, tables, lens, 1.0, backend="torch")
    with pytest.raises(ValueError, match="context_lens"):
        ops.paged_decode_attention(q, k_cache, v_cache, tables, lens[:1], 1.0, backend="torch")
    with pytest.raises(ValueError, match="k_cache and v_cache"):
        ops.paged_decode_attention(q, k_cache, v_cache[:, :2], tables, lens, 1.0, backend="torch")
    with pytest.raises(ValueError, match="block_tables"):
        ops.paged_decode_attention(q, k_cache, v_cache, tables.float(), lens, 1.0, backend="torch")
    cu = torch.tensor([0, 1, 2], dtype=torch.int32)
    with pytest.raises(ValueError, match="max_seqlen_k"):
        ops.paged_prefill_attention(q, k_cache, v_cache, cu, tables, lens, 1, 1000, 1.0, backend="torch")
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        ops.paged_prefill_attention(q, k_cache, v_cache, cu[:2], tables, lens, 1, 5, 1.0, backend="torch")
