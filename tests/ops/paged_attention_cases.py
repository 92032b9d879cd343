"""Paged KV caches for the paged attention tests (tests/ops/test_paged_attention.py for decode,
tests/ops/test_paged_prefill_attention.py for prefill): inputs, the fp64 specifications and the derived bounds."""

from __future__ import annotations

import torch

from tao_engine.ops.paged_attention import paged_decode_attention_reference, paged_prefill_attention_reference
from tests.error_bounds import assert_within_bound
from tests.tolerances import bound

LEAK = 1e3  # value of every cache row outside the contexts: one attended by mistake wrecks the output


def paged_inputs(seqs, block_size, hq, hkv, d, cache_dtype, q_dtype, seed, device="cpu", shared_blocks=0,
                 index=torch.int32):  # fmt: skip
    """For sequences of (context length, query length): q [N, Hq, D] (a non-contiguous slice of a fused projection),
    caches of shuffled blocks, cu_seqlens_q [B + 1], tables [B, M] whose padding entries point at LEAK blocks nobody
    owns, context lens [B]. The first `shared_blocks` table entries are the same blocks in every row: a prompt's
    blocks shared by its samples."""
    gen = torch.Generator().manual_seed(seed)
    needed = [-(-ctx // block_size) for ctx, _ in seqs]
    owned = shared_blocks + sum(n - shared_blocks for n in needed)
    num_blocks = owned + 2  # the last 2 blocks stay LEAK
    order = torch.randperm(owned, generator=gen)
    width = max(needed, default=0) + 2
    tables = torch.randint(owned, num_blocks, (len(seqs), width), generator=gen)
    start = shared_blocks
    for row, n in enumerate(needed):
        tables[row, :shared_blocks] = order[:shared_blocks]
        tables[row, shared_blocks:n] = order[start : start + n - shared_blocks]
        start += n - shared_blocks
    k_cache = torch.full((num_blocks, block_size, hkv, d), LEAK, dtype=torch.float64)
    v_cache = torch.full((num_blocks, block_size, hkv, d), -LEAK, dtype=torch.float64)
    flat_k, flat_v = k_cache.view(-1, hkv, d), v_cache.view(-1, hkv, d)
    prompt = torch.arange(shared_blocks * block_size)
    shared_k = torch.randn(len(prompt), hkv, d, generator=gen, dtype=torch.float64)
    shared_v = torch.randn(len(prompt), hkv, d, generator=gen, dtype=torch.float64)
    for row, (ctx, _) in enumerate(seqs):
        p = torch.arange(ctx)
        slots = tables[row, p // block_size] * block_size + p % block_size
        flat_k[slots] = torch.randn(ctx, hkv, d, generator=gen, dtype=torch.float64)
        flat_v[slots] = torch.randn(ctx, hkv, d, generator=gen, dtype=torch.float64)
        flat_k[slots[: len(prompt)]] = shared_k[:ctx]  # every sample sees the same prompt K/V
        flat_v[slots[: len(prompt)]] = shared_v[:ctx]
    q_lens = [q_len for _, q_len in seqs]
    q = torch.randn(sum(q_lens), hq, 2 * d, generator=gen)[..., :d].to(q_dtype)
    cu = torch.tensor([0, *torch.tensor(q_lens, dtype=torch.long).cumsum(0).tolist()], dtype=index)
    lens = torch.tensor([ctx for ctx, _ in seqs], dtype=index)
    return tuple(
        t.to(device) for t in (q, k_cache.to(cache_dtype), v_cache.to(cache_dtype), cu, tables.to(index), lens)
    )


def decode_inputs(lens, block_size, hq, hkv, d, cache_dtype, q_dtype, seed, device="cpu", index=torch.int32):
    """(q [B, Hq, D], k_cache, v_cache, tables, context lens) of one query per sequence; every sequence shares its
    first block with the others (a common prefix)."""
    q, k, v, _, tables, ctx = paged_inputs([(n, 1) for n in lens], block_size, hq, hkv, d, cache_dtype, q_dtype, seed,
                                           device, shared_blocks=1, index=index)  # fmt: skip
    return q, k, v, tables, ctx


def half_of(backend: str, q: torch.Tensor, k_cache: torch.Tensor) -> torch.dtype | None:
    """The half dtype a backend rounds q and the attention weights to for its dot products (tests/bounds/attention.py),
    None where they stay fp32: the torch reference attends through SDPA in a half cache's dtype, triton's prefill
    and flash-attn take half dots when q is half too; cpp and triton's decode read q's own values in fp32."""
    half = None if k_cache.dtype == torch.float32 else k_cache.dtype
    if backend == "torch":
        return half
    if backend in ("triton_prefill", "flash_attn") and q.dtype != torch.float32:
        return half
    return None


def reference64(q, k_cache, v_cache, tables, lens, scale, half=None, cu=None, max_q=1):
    """(the reference in fp64, the derived bound around it, the output dtype). Decode when cu is None, else prefill
    with cu_seqlens_q and the longest query `max_q`."""
    args = (q.double().cpu(), k_cache.double().cpu(), v_cache.double().cpu())
    if cu is None:
        value = paged_decode_attention_reference(*args, tables.cpu(), lens.cpu(), scale)
        q_lens = [1] * q.shape[0]
    else:
        max_k = int(lens.max()) if lens.numel() else 0
        value = paged_prefill_attention_reference(*args, cu.cpu(), tables.cpu(), lens.cpu(), max_q, max_k, scale)
        q_lens = cu.cpu().diff().tolist()
    limit = bound("paged_attention", q=q, k_cache=k_cache, v_cache=v_cache, tables=tables, lens=lens.cpu(),
                  q_lens=q_lens, scale=scale, output=q.dtype, half=half)
    return value, limit, q.dtype


def assert_matches(out, expected, name="paged attention"):
    value, limit, dtype = expected
    assert out.dtype == dtype and out.shape == value.shape and out.is_contiguous()
    assert torch.isfinite(out).all()
    assert_within_bound(out, value, limit, name)


def dense_reference(q, k_cache, v_cache, tables, context_lens, query_lens, scale):
    """An independent fp64 specification: q packed [N, Hq, D], query j of sequence b at position ctx_b - q_len_b + j,
    causal, each sequence's keys and values read token by token through the slot formula."""
    hq, hkv, bs, d = q.shape[1], k_cache.shape[2], k_cache.shape[1], k_cache.shape[3]
    out, row = [], 0
    for b, (n, t) in enumerate(zip(context_lens.tolist(), query_lens, strict=True)):
        p = torch.arange(n)
        slots = tables[b].long()[p // bs] * bs + p % bs
        keys = k_cache.reshape(-1, hkv, d)[slots].double().repeat_interleave(hq // hkv, dim=1)  # [n, Hq, D]
        values = v_cache.reshape(-1, hkv, d)[slots].double().repeat_interleave(hq // hkv, dim=1)
        qs = q[row : row + t].double()  # [t, Hq, D]
        scores = torch.einsum("thd,nhd->htn", qs, keys) * scale
        q_pos = torch.arange(n - t, n)
        scores = scores.masked_fill(torch.arange(n)[None, :] > q_pos[:, None], float("-inf"))
        out.append(torch.einsum("htn,nhd->thd", scores.softmax(-1), values))
        row += t
    return torch.cat(out)
