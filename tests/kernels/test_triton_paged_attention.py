"""The `triton` backend of paged_decode_attention (kernels/paged_attention.py) against an fp64 evaluation of the torch
reference: odd batches and context lengths, two block sizes, GQA groups, fp32/bf16/fp16, padding entries in the block
tables that point at poisoned blocks, the split-K path forced and chosen, and bad input."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.paged_attention import paged_decode_attention_reference
from tao_engine.ops.registry import BackendUnavailableError
from tao_engine.ops.triton_support import kernel_module
from tests.error_bounds import assert_within_bound
from tests.tolerances import bound

pytestmark = pytest.mark.triton

BATCHES = [[17], [1, 15, 40]]  # context lens of B = 1 and 3 sequences
LEAK = 1e3  # value of every cache row outside the contexts: one attended by mistake wrecks the output


def paged_inputs(lens, block_size, hq, hkv, d, cache_dtype, q_dtype, device, seed, table_dtype=torch.int32):
    """q [B, Hq, D] (non-contiguous), caches with shuffled blocks, tables [B, M] whose padding entries point at
    LEAK-filled blocks nobody owns, and sequence 1 (if any) sharing sequence 0's first block."""
    gen = torch.Generator().manual_seed(seed)
    needed = [-(-n // block_size) for n in lens]
    owned = sum(needed)
    num_blocks = owned + 2  # the last 2 blocks stay LEAK
    order = torch.randperm(owned, generator=gen)
    width = max(needed) + 2
    tables = torch.randint(owned, num_blocks, (len(lens), width), generator=gen)
    start = 0
    for row, n in enumerate(needed):
        tables[row, :n] = order[start : start + n]
        start += n
    if len(lens) > 1 and needed[1] > 1 and lens[0] >= block_size:
        tables[1, 0] = tables[0, 0]  # a shared full prefix block
    k_cache = torch.full((num_blocks, block_size, hkv, d), LEAK, dtype=torch.float64)
    v_cache = torch.full((num_blocks, block_size, hkv, d), -LEAK, dtype=torch.float64)
    flat_k, flat_v = k_cache.view(-1, hkv, d), v_cache.view(-1, hkv, d)
    for row, n in enumerate(lens):
        p = torch.arange(n)
        slots = tables[row, p // block_size] * block_size + p % block_size
        flat_k[slots] = torch.randn(n, hkv, d, generator=gen, dtype=torch.float64)
        flat_v[slots] = torch.randn(n, hkv, d, generator=gen, dtype=torch.float64)
    q = torch.randn(len(lens), hq, 2 * d, generator=gen)[..., :d].to(q_dtype)  # a slice of a fused projection
    lens_t = torch.tensor(lens, dtype=torch.int32)
    return tuple(
        t.to(device)
        for t in (q, k_cache.to(cache_dtype), v_cache.to(cache_dtype), tables.to(table_dtype), lens_t)
    )


def reference64(q, k_cache, v_cache, tables, lens, scale):
    """(the reference in fp64, the derived bound of the kernel around it: fp32 scores on q's own values, fp32
    weights and sums, one rounding into q's dtype; the dtype the output must have)."""
    args = (q.double().cpu(), k_cache.double().cpu(), v_cache.double().cpu(), tables.cpu(), lens.cpu())
    limit = bound("paged_attention", q=q, k_cache=k_cache, v_cache=v_cache, tables=tables, lens=lens.cpu(),
                  q_lens=[1] * q.shape[0], scale=scale, output=q.dtype)
    return paged_decode_attention_reference(*args, scale), limit, q.dtype


def assert_matches(out, expected):
    value, limit, dtype = expected
    assert out.dtype == dtype and out.shape == value.shape and out.is_contiguous()
    assert torch.isfinite(out).all()
    assert_within_bound(out, value, limit, "paged_decode_attention triton")


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [16, 32])
@pytest.mark.parametrize(("hq", "hkv"), [(4, 2), (3, 1)])
@pytest.mark.parametrize("block_size", [4, 16])
@pytest.mark.parametrize("lens", BATCHES, ids=lambda lens: f"B{len(lens)}")
def test_matches_fp64_reference(triton_device, lens, block_size, hq, hkv, d, cache_dtype):
    seed = len(lens) * 1000 + block_size * 100 + hq * 10 + d
    q, k, v, tables, ctx = paged_inputs(lens, block_size, hq, hkv, d, cache_dtype, cache_dtype, triton_device, seed)
    scale = d**-0.5
    out = ops.paged_decode_attention(q, k, v, tables, ctx, scale, backend="triton")
    assert_matches(out, reference64(q, k, v, tables, ctx, scale))


@pytest.mark.parametrize("num_splits", [2, 3, 7])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_split_k_matches_fp64_reference(triton_device, num_splits, cache_dtype):
    # 7 splits of a 48-token table leave late partitions empty for the short sequences (and 1-token ones).
    q, k, v, tables, ctx = paged_inputs([1, 15, 40], 4, 4, 2, 16, cache_dtype, cache_dtype, triton_device, seed=7)
    out = kernel_module("paged_attention").paged_decode_attention(q, k, v, tables, ctx, 0.25, num_splits=num_splits)
    assert_matches(out, reference64(q, k, v, tables, ctx, 0.25))


@pytest.mark.parametrize("num_splits", [1, 2])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_contexts_spanning_several_tiles(triton_device, num_splits, cache_dtype):
    # 16-token tiles: the 40-token context spans three of them (two per partition when split), so the running max
    # and sum are rescaled between tiles; the largest scores sit in the last tile to make that rescale matter.
    q, k, v, tables, ctx = paged_inputs([1, 15, 40], 4, 4, 2, 16, cache_dtype, cache_dtype, triton_device, seed=17)
    last = tables[2, 9] * 4  # flat slot of position 36 of sequence 2
    k.view(-1, 2, 16)[last : last + 4] += q[2].view(2, 2, 16).sum(1).to(cache_dtype)  # align keys with the queries
    out = kernel_module("paged_attention").paged_decode_attention(
        q, k, v, tables, ctx, 0.5, num_splits=num_splits, block_n=16
    )
    assert_matches(out, reference64(q, k, v, tables, ctx, 0.5))


@pytest.mark.parametrize(("q_dtype", "cache_dtype"), [(torch.float32, torch.bfloat16), (torch.float16, torch.float16)])
def test_q_dtype_differs_from_cache_and_fp16(triton_device, q_dtype, cache_dtype):
    # A float32 q over a bfloat16 cache keeps float32 accuracy: q is not rounded to the cache dtype.
    q, k, v, tables, ctx = paged_inputs([1, 15, 40], 16, 3, 1, 16, cache_dtype, q_dtype, triton_device, seed=3)
    out = ops.paged_decode_attention(q, k, v, tables, ctx, 0.3, backend="triton")
    assert_matches(out, reference64(q, k, v, tables, ctx, 0.3))


def test_head_dim_not_a_power_of_two(triton_device):
    q, k, v, tables, ctx = paged_inputs([15, 17], 4, 4, 2, 24, torch.float32, torch.float32, triton_device, seed=5)
    out = ops.paged_decode_attention(q, k, v, tables, ctx, 0.2, backend="triton")
    assert_matches(out, reference64(q, k, v, tables, ctx, 0.2))


def test_int64_tables_and_lens_and_padding_never_read(triton_device):
    q, k, v, tables, ctx = paged_inputs(
        [1, 15, 17], 4, 4, 2, 16, torch.float32, torch.float32, triton_device, seed=11, table_dtype=torch.int64
    )
    ctx = ctx.long()
    # Padding entries may hold anything, even ids past the cache: they must never be loaded.
    for row, n in enumerate(ctx.tolist()):
        tables[row, -(-n // 4) :] = 10**9
    out = ops.paged_decode_attention(q, k, v, tables, ctx, 0.25, backend="triton")
    expected = reference64(q, k, v, tables.clamp(max=k.shape[0] - 1), ctx, 0.25)
    assert_matches(out, expected)


def test_empty_context_gives_zeros_like_the_reference(triton_device):
    q, k, v, tables, ctx = paged_inputs([15, 17], 4, 4, 2, 16, torch.float32, torch.float32, triton_device, seed=13)
    ctx[0] = 0
    expected = reference64(q, k, v, tables, ctx, 0.25)
    assert expected[0][0].abs().max() == 0
    for splits in (1, 3):
        out = kernel_module("paged_attention").paged_decode_attention(q, k, v, tables, ctx, 0.25, num_splits=splits)
        assert_matches(out, expected)


def test_empty_batch(triton_device):
    q, k, v, tables, ctx = paged_inputs([3], 4, 4, 2, 16, torch.float32, torch.float32, triton_device, seed=1)
    out = ops.paged_decode_attention(q[:0], k, v, tables[:0], ctx[:0], 0.25, backend="triton")
    assert out.shape == (0, 4, 16) and out.dtype == torch.float32


def test_choose_num_splits():
    module = kernel_module("paged_attention")
    assert module.choose_num_splits(1, 2, 32, target=264) == 1  # short context: never split
    assert module.choose_num_splits(64, 8, 4096, target=264) == 1  # enough programs already
    assert module.choose_num_splits(1, 2, 4096, target=264) == 4096 // module.MIN_PARTITION  # >= MIN_PARTITION each
    assert module.choose_num_splits(2, 8, 32768, target=264) == 17  # enough splits to fill the device, no more
    assert module.choose_num_splits(1, 1, 10**7, target=10**4) == module.MAX_SPLITS
    assert module.choose_num_splits(4, 2, 10**5, target=1) == 1  # the interpreter's target


def test_bad_shapes_raise_the_references_errors(triton_device):
    q, k, v, tables, ctx = paged_inputs([15, 17], 4, 4, 2, 16, torch.float32, torch.float32, triton_device, seed=2)
    cases = [
        ((q, k, v[:, :, :1], tables, ctx), "k_cache and v_cache must both be"),
        ((q[:, :3], k, v, tables, ctx), "Hq a multiple of Hkv"),
        ((q, k, v, tables.float(), ctx), "block_tables must be int32"),
        ((q, k, v, tables, ctx[:1]), "context_lens must be"),
        ((q[:1], k, v, tables, ctx), "one query per sequence"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            ops.paged_decode_attention(*args, 0.25, backend="triton")
    with pytest.raises(ValueError, match="num_splits must be >= 1"):
        kernel_module("paged_attention").paged_decode_attention(q, k, v, tables, ctx, 0.25, num_splits=0)
    with pytest.raises(ValueError, match="block_n must be a power of two"):
        kernel_module("paged_attention").paged_decode_attention(q, k, v, tables, ctx, 0.25, block_n=24)


def test_supports_refuses_what_the_kernel_cannot_run(triton_device):
    q, k, v, tables, ctx = paged_inputs([15, 17], 4, 4, 2, 16, torch.float32, torch.float32, triton_device, seed=4)
    with pytest.raises(BackendUnavailableError, match="k_cache has dtype torch.float64"):
        ops.paged_decode_attention(q, k.double(), v.double(), tables, ctx, 0.25, backend="triton")
    with pytest.raises(BackendUnavailableError, match="share one dtype"):
        ops.paged_decode_attention(q, k, v.bfloat16(), tables, ctx, 0.25, backend="triton")
    with pytest.raises(BackendUnavailableError, match="context_lens must be an integer tensor"):
        ops.paged_decode_attention(q, k, v, tables, ctx.float(), 0.25, backend="triton")
