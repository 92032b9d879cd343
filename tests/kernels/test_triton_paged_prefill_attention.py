"""The `triton` backend of paged_prefill_attention (kernels/paged_prefill_attention.py) against an fp64 evaluation of
the torch reference: ragged query lengths 1 / 7 / 13 mixed with sequences that extend a cached prefix, block sizes 8
and 16, GQA ratios 1 and 3, head dims 32 / 64 / 24, fp32 / bf16 / fp16, shuffled blocks, padding entries pointing at
poisoned blocks, n samples sharing one prompt's blocks, queries and keys spanning several tiles, and bad input."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.paged_attention import paged_prefill_attention_reference
from tao_engine.ops.registry import BackendUnavailableError
from tao_engine.ops.triton_support import kernel_module
from tests.error_bounds import assert_within_bound
from tests.tolerances import bound

pytestmark = pytest.mark.triton

# (context length, query length): a whole prompt, two extends of a cached prefix, one decode-like row, a long extend.
SEQS = [(13, 13), (40, 7), (7, 1), (29, 13)]
LEAK = 1e3  # value of every cache row outside the contexts: one attended by mistake wrecks the output


def prefill_inputs(
    seqs, block_size, hq, hkv, d, cache_dtype, q_dtype, device, seed, shared_blocks=0, index=torch.int32
):
    """q [N, Hq, D] (a non-contiguous slice), caches of shuffled blocks, cu_seqlens_q [B + 1], tables [B, M] whose
    padding entries point at LEAK blocks nobody owns, context lens [B]. The first `shared_blocks` table entries are
    the same blocks in every row: a prompt's blocks shared by its samples."""
    gen = torch.Generator().manual_seed(seed)
    needed = [-(-ctx // block_size) for ctx, _ in seqs]
    owned = shared_blocks + sum(n - shared_blocks for n in needed)
    num_blocks = owned + 2  # the last 2 blocks stay LEAK
    order = torch.randperm(owned, generator=gen)
    width = max(needed) + 2
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
    q = torch.randn(sum(q_lens), hq, 2 * d, generator=gen)[..., :d].to(q_dtype)  # a slice of a fused projection
    cu = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=index)
    lens = torch.tensor([ctx for ctx, _ in seqs], dtype=index)
    return tuple(
        t.to(device) for t in (q, k_cache.to(cache_dtype), v_cache.to(cache_dtype), cu, tables.to(index), lens)
    )


def bounds(seqs):
    return max(q_len for _, q_len in seqs), max(ctx for ctx, _ in seqs)


def reference64(q, k_cache, v_cache, cu, tables, lens, seqs, scale):
    """(the reference in fp64, the derived bound of the kernel around it, the output dtype). A half q over a half
    cache takes half dots: q and the weights are rounded to the cache dtype, products accumulate in fp32."""
    args = (q.double().cpu(), k_cache.double().cpu(), v_cache.double().cpu(), cu.cpu(), tables.cpu(), lens.cpu())
    half = k_cache.dtype if k_cache.dtype != torch.float32 and q.dtype != torch.float32 else None
    limit = bound("paged_attention", q=q, k_cache=k_cache, v_cache=v_cache, tables=tables, lens=lens.cpu(),
                  q_lens=[q_len for _, q_len in seqs], scale=scale, output=q.dtype, half=half)
    return paged_prefill_attention_reference(*args, *bounds(seqs), scale), limit, q.dtype


def assert_matches(out, expected):
    value, limit, dtype = expected
    assert out.dtype == dtype and out.shape == value.shape and out.is_contiguous()
    assert torch.isfinite(out).all()
    assert_within_bound(out, value, limit, "paged_prefill_attention triton")


def run_triton(inputs, seqs, scale):
    q, k, v, cu, tables, lens = inputs
    return ops.paged_prefill_attention(q, k, v, cu, tables, lens, *bounds(seqs), scale, backend="triton")


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [32, 64])
@pytest.mark.parametrize(("hq", "hkv"), [(2, 2), (6, 2)], ids=["mha", "gqa3"])
@pytest.mark.parametrize("block_size", [8, 16])
def test_matches_fp64_reference(triton_device, block_size, hq, hkv, d, cache_dtype):
    seed = block_size * 1000 + hq * 100 + d
    inputs = prefill_inputs(SEQS, block_size, hq, hkv, d, cache_dtype, cache_dtype, triton_device, seed)
    scale = d**-0.5
    assert_matches(run_triton(inputs, SEQS, scale), reference64(*inputs, SEQS, scale))


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_samples_sharing_prompt_blocks(triton_device, cache_dtype):
    # Four samples of one 32-token prompt (2 shared blocks of 16): sample 0 prefills prompt + 5 completion tokens,
    # the others extend the cached prompt by 1, 7 and 13 tokens.
    seqs = [(37, 37), (33, 1), (39, 7), (45, 13)]
    inputs = prefill_inputs(seqs, 16, 3, 1, 32, cache_dtype, cache_dtype, triton_device, seed=21, shared_blocks=2)
    tables = inputs[4]
    assert bool((tables[:, :2] == tables[0, :2]).all())  # the prompt's blocks really are shared
    assert_matches(run_triton(inputs, seqs, 0.2), reference64(*inputs, seqs, 0.2))


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_queries_and_keys_spanning_several_tiles(triton_device, cache_dtype):
    # 16-row and 16-key tiles: 13 queries x 3 heads = 39 rows span 3 query tiles (a tile boundary inside a token's
    # heads), and the 40-token contexts span 3 key tiles. The largest scores sit in the last key tile, so the
    # running max and sum must be rescaled between tiles.
    seqs = [(40, 13), (40, 1), (17, 13)]
    inputs = prefill_inputs(seqs, 8, 3, 1, 32, cache_dtype, cache_dtype, triton_device, seed=17)
    q, k, v, cu, tables, lens = inputs
    slot = tables[0, 4] * 8  # positions 32..39 of sequence 0
    k.view(-1, 1, 32)[slot : slot + 8] += q[0].sum(0).to(cache_dtype) * 0.5  # keys aligned with the queries
    out = kernel_module("paged_prefill_attention").paged_prefill_attention(
        q, k, v, cu, tables, lens, 13, 40, 0.3, block_m=16, block_n=16
    )
    assert_matches(out, reference64(*inputs, seqs, 0.3))


@pytest.mark.parametrize("num_splits", [2, 3, 7])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_split_k_matches_fp64_reference(triton_device, num_splits, cache_dtype):
    # 16-key partitions of a 48-token range (7 splits: 16 each, the last ones empty for every tile), short and long
    # contexts, tiles whose causal limit ends inside, or before, a partition.
    seqs = [(48, 13), (40, 1), (7, 7), (29, 13)]
    inputs = prefill_inputs(seqs, 8, 3, 1, 32, cache_dtype, cache_dtype, triton_device, seed=23 + num_splits)
    out = kernel_module("paged_prefill_attention").paged_prefill_attention(
        *inputs, 13, 48, 0.3, block_m=16, block_n=16, num_splits=num_splits
    )
    assert_matches(out, reference64(*inputs, seqs, 0.3))


def test_choose_num_splits_for_prefill():
    # The decode kernel's rule over (query tiles x kv heads): never on the interpreter (target 1), on a big GPU only
    # for few tiles over long contexts.
    module = kernel_module("paged_attention")
    assert module.choose_num_splits(1, 2, 32768, target=1) == 1
    assert module.choose_num_splits(1, 8, 32768, target=264) > 1  # one short extend over a 32k prompt
    assert module.choose_num_splits(64, 8, 32768, target=264) == 1  # a long prefill fills the GPU by itself


@pytest.mark.parametrize(("q_dtype", "cache_dtype"), [(torch.float32, torch.bfloat16), (torch.float16, torch.float16)])
def test_q_dtype_differs_from_cache_and_fp16(triton_device, q_dtype, cache_dtype):
    # A float32 q over a bfloat16 cache keeps float32 accuracy: q is not rounded to the cache dtype.
    inputs = prefill_inputs(SEQS, 16, 6, 2, 32, cache_dtype, q_dtype, triton_device, seed=3)
    assert_matches(run_triton(inputs, SEQS, 0.25), reference64(*inputs, SEQS, 0.25))


def test_head_dim_not_a_power_of_two(triton_device):
    inputs = prefill_inputs(SEQS, 8, 3, 1, 24, torch.float32, torch.float32, triton_device, seed=5)
    assert_matches(run_triton(inputs, SEQS, 0.2), reference64(*inputs, SEQS, 0.2))


def test_int64_indices_empty_query_rows_and_padding_never_read(triton_device):
    # A sequence with no queries this step (q_len 0) sits between two others; padding table entries point past the
    # cache: they must never be loaded.
    seqs = [(9, 4), (20, 0), (23, 7)]
    inputs = prefill_inputs(seqs, 8, 4, 2, 32, torch.float32, torch.float32, triton_device, seed=11, index=torch.int64)
    q, k, v, cu, tables, lens = inputs
    expected = reference64(*inputs, seqs, 0.25)
    for row, (ctx, _) in enumerate(seqs):
        tables[row, -(-ctx // 8) :] = 10**9
    out = ops.paged_prefill_attention(q, k, v, cu, tables, lens, 7, 23, 0.25, backend="triton")
    assert_matches(out, expected)


def test_single_token_queries_equal_triton_decode(triton_device):
    seqs = [(1, 1), (15, 1), (40, 1)]
    q, k, v, cu, tables, lens = prefill_inputs(seqs, 8, 6, 2, 32, torch.float32, torch.float32, triton_device, seed=9)
    prefill = ops.paged_prefill_attention(q, k, v, cu, tables, lens, 1, 40, 0.25, backend="triton")
    decode = ops.paged_decode_attention(q, k, v, tables, lens, 0.25, backend="triton")
    expected = reference64(q, k, v, cu, tables, lens, seqs, 0.25)
    assert_matches(prefill, expected)  # two fp32 kernels, each within the bound of fp64
    assert_matches(decode, expected)


def test_bad_shapes_raise_the_references_errors(triton_device):
    q, k, v, cu, tables, lens = prefill_inputs(SEQS, 8, 4, 2, 32, torch.float32, torch.float32, triton_device, seed=2)
    cases = [
        ((q, k, v[:, :, :1], cu, tables, lens, 13, 40), "k_cache and v_cache must both be"),
        ((q[:, :3], k, v, cu, tables, lens, 13, 40), "Hq a multiple of Hkv"),
        ((q, k, v, cu, tables.float(), lens, 13, 40), "block_tables must be int32"),
        ((q, k, v, cu, tables, lens[:1], 13, 40), "context_lens must be"),
        ((q, k, v, cu[:2], tables, lens, 13, 40), "cu_seqlens_q must be"),
        ((q, k, v, cu, tables, lens, 13, 10**4), "max_seqlen_k"),
        ((q, k, v, cu, tables, lens, 0, 40), "max_seqlen_q >= 1"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            ops.paged_prefill_attention(*args, 0.25, backend="triton")
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        kernel_module("paged_prefill_attention").paged_prefill_attention(q, k, v, cu, tables, lens, 13, 40, 0.25, 24)
    with pytest.raises(ValueError, match="num_splits must be >= 1"):
        kernel_module("paged_prefill_attention").paged_prefill_attention(
            q, k, v, cu, tables, lens, 13, 40, 0.25, num_splits=0
        )


def test_supports_refuses_what_the_kernel_cannot_run(triton_device):
    q, k, v, cu, tables, lens = prefill_inputs(SEQS, 8, 4, 2, 32, torch.float32, torch.float32, triton_device, seed=4)
    bounds_ = (13, 40, 0.25)
    with pytest.raises(BackendUnavailableError, match="k_cache has dtype torch.float64"):
        ops.paged_prefill_attention(q, k.double(), v.double(), cu, tables, lens, *bounds_, backend="triton")
    with pytest.raises(BackendUnavailableError, match="share one dtype"):
        ops.paged_prefill_attention(q, k, v.bfloat16(), cu, tables, lens, *bounds_, backend="triton")
    with pytest.raises(BackendUnavailableError, match="cu_seqlens_q must be int32 or int64"):
        ops.paged_prefill_attention(q, k, v, cu.float(), tables, lens, *bounds_, backend="triton")
    wide = torch.zeros(2, 8, 1, 512, dtype=torch.float32, device=q.device)
    with pytest.raises(BackendUnavailableError, match="head dim D must be <= 256"):
        ops.paged_prefill_attention(q.new_zeros(1, 1, 512), wide, wide, cu[:2], tables[:1, :1], lens[:1], 1, 1, 1.0,
                                    backend="triton")  # fmt: skip
