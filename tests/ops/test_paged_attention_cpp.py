"""The `cpp` backend of paged_decode_attention (csrc/cpu/paged_attention*.{h,cpp}) against an fp64 evaluation of the
torch reference: odd batches and context lengths, both block sizes, GQA, the head_dim fast paths and the generic one,
fp32/bf16 caches, padding and shared blocks, split contexts, both per-ISA kernel copies, opcheck and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.extension import extension_status, load_extension
from tao_engine.ops.paged_attention import paged_decode_attention_reference
from tao_engine.ops.registry import BackendUnavailableError, all_ops
from tests.error_bounds import assert_within_bound
from tests.tolerances import bound, check

pytestmark = pytest.mark.ext

BATCHES = [[300], [1, 16, 129], [1, 15, 16, 17, 129, 300, 7]]  # context lens of B = 1, 3, 7 sequences
HEADS = [(9, 3), (4, 4), (8, 1)]  # (Hq, Hkv)
LEAK = 1e3  # value of every cache row outside the contexts: one attended by mistake wrecks the output


@pytest.fixture(scope="module", autouse=True)
def _extension() -> None:
    loaded, why = extension_status()
    if not loaded:
        pytest.skip(f"tao_engine._C is not built: {why}")


def paged_inputs(lens, block_size, hq, hkv, d, cache_dtype, q_dtype, seed, table_dtype=torch.int32):
    """q [B, Hq, D] (non-contiguous), caches with shuffled blocks, tables [B, M] whose padding entries point at
    LEAK-filled blocks, and sequence 1 (if any) sharing sequence 0's first block as a common prefix."""
    gen = torch.Generator().manual_seed(seed)
    needed = [-(-n // block_size) for n in lens]
    num_blocks = sum(needed) + 3  # the last 3 blocks are owned by nobody and stay LEAK
    order = torch.randperm(num_blocks - 3, generator=gen)
    width = max(needed) + 2
    # Padding entries: valid ids of unowned blocks, never attended.
    tables = torch.randint(num_blocks - 3, num_blocks, (len(lens), width), generator=gen)
    start = 0
    for row, n in enumerate(needed):
        tables[row, :n] = order[start : start + n]
        start += n
    if len(lens) > 1 and needed[1] > 1 and lens[0] >= block_size:
        tables[1, 0] = tables[0, 0]  # a shared full prefix block
    k_cache = torch.full((num_blocks, block_size, hkv, d), LEAK)
    v_cache = torch.full((num_blocks, block_size, hkv, d), -LEAK)
    flat_k, flat_v = k_cache.view(-1, hkv, d), v_cache.view(-1, hkv, d)
    for row, n in enumerate(lens):
        p = torch.arange(n)
        slots = tables[row, p // block_size] * block_size + p % block_size
        flat_k[slots] = torch.randn(n, hkv, d, generator=gen)
        flat_v[slots] = torch.randn(n, hkv, d, generator=gen)
    q = torch.randn(len(lens), hq, 2 * d, generator=gen)[..., :d].to(q_dtype)  # as it comes out of a fused projection
    lens_t = torch.tensor(lens, dtype=torch.int32)
    return q, k_cache.to(cache_dtype), v_cache.to(cache_dtype), tables.to(table_dtype), lens_t


def reference64(q, k_cache, v_cache, tables, lens, scale):
    """(the reference in fp64 [B, Hq, D], the derived bound of an fp32 kernel around it: fp32 dot products on q's own
    values and the cache's, one rounding into q's dtype)."""
    value = paged_decode_attention_reference(q.double(), k_cache.double(), v_cache.double(), tables, lens, scale)
    limit = bound("paged_attention", q=q, k_cache=k_cache, v_cache=v_cache, tables=tables, lens=lens,
                  q_lens=[1] * q.shape[0], scale=scale, output=q.dtype)
    return value, limit, q.dtype


def assert_matches(out, expected):
    value, limit, dtype = expected
    assert out.dtype == dtype and out.shape == value.shape and out.is_contiguous()
    assert_within_bound(out, value, limit, "paged_decode_attention cpp")


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [64, 32])
@pytest.mark.parametrize(("hq", "hkv"), HEADS)
@pytest.mark.parametrize("block_size", [16, 8])
@pytest.mark.parametrize("lens", BATCHES, ids=lambda lens: f"B{len(lens)}")
def test_matches_fp64_reference(lens, block_size, hq, hkv, d, cache_dtype):
    seed = len(lens) * 1000 + block_size * 100 + hq * 10 + d
    q, k_cache, v_cache, tables, ctx = paged_inputs(lens, block_size, hq, hkv, d, cache_dtype, cache_dtype, seed)
    scale = d**-0.5
    out = ops.paged_decode_attention(q, k_cache, v_cache, tables, ctx, scale, backend="cpp")
    assert_matches(out, reference64(q, k_cache, v_cache, tables, ctx, scale))


@pytest.mark.parametrize("d", [128, 36, 7])  # the other fast path, and two generic head dims (not whole vectors)
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_other_head_dims_and_fp16(d, cache_dtype):
    q, k_cache, v_cache, tables, ctx = paged_inputs([17, 1, 129], 16, 6, 2, d, cache_dtype, torch.float32, seed=d)
    out = ops.paged_decode_attention(q, k_cache, v_cache, tables, ctx, 0.3, backend="cpp")
    assert_matches(out, reference64(q, k_cache, v_cache, tables, ctx, 0.3))


@pytest.mark.parametrize(("q_dtype", "cache_dtype"), [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32),
                                                      (torch.float16, torch.float32)])  # fmt: skip
def test_q_dtype_differs_from_cache(q_dtype, cache_dtype):
    q, k_cache, v_cache, tables, ctx = paged_inputs([15, 300], 16, 9, 3, 64, cache_dtype, q_dtype, seed=3)
    out = ops.paged_decode_attention(q, k_cache, v_cache, tables, ctx, 0.125, backend="cpp")
    # The kernel reads q's own values (no rounding to the cache dtype), so the fp64 check is on those values.
    assert_matches(out, reference64(q, k_cache, v_cache, tables, ctx, 0.125))


def test_int64_tables_and_lens():
    q, k_cache, v_cache, tables, ctx = paged_inputs([129, 16, 1], 8, 4, 4, 32, torch.float32, torch.float32, seed=4,
                                                    table_dtype=torch.int64)  # fmt: skip
    out = ops.paged_decode_attention(q, k_cache, v_cache, tables, ctx.long(), 0.2, backend="cpp")
    assert_matches(out, reference64(q, k_cache, v_cache, tables, ctx, 0.2))


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_split_contexts_match(cache_dtype):
    # With few sequences per thread the kernel splits each context into ranges of blocks merged afterwards; 4 threads
    # make that happen on any machine. Lengths cover splits that end mid-block and splits left empty.
    q, k_cache, v_cache, tables, ctx = paged_inputs([2000, 300, 1], 16, 8, 2, 64, cache_dtype, torch.float32, seed=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        split = ops.paged_decode_attention(q, k_cache, v_cache, tables, ctx, 0.125, backend="cpp")
        single = ops.paged_decode_attention(q[:1], k_cache, v_cache, tables[:1], ctx[:1], 0.125, backend="cpp")
    finally:
        torch.set_num_threads(threads)
    expected = reference64(q, k_cache, v_cache, tables, ctx, 0.125)
    assert_matches(split, expected)
    assert_matches(single, (expected[0][:1], expected[1][:1], expected[2]))


def test_empty_context_gives_zeros_like_the_reference():
    q, k_cache, v_cache, tables, ctx = paged_inputs([5, 17], 8, 4, 2, 32, torch.float32, torch.float32, seed=6)
    ctx[0] = 0
    out = ops.paged_decode_attention(q, k_cache, v_cache, tables, ctx, 0.5, backend="cpp")
    expected = reference64(q, k_cache, v_cache, tables, ctx, 0.5)
    assert torch.equal(expected[0][0], torch.zeros_like(expected[0][0]))
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert_matches(out, expected)


def test_empty_batch():
    _, k_cache, v_cache, _, _ = paged_inputs([3], 8, 4, 2, 32, torch.float32, torch.float32, seed=7)
    out = ops.paged_decode_attention(torch.randn(0, 4, 32), k_cache, v_cache, torch.zeros(0, 2, dtype=torch.int32),
                                     torch.zeros(0, dtype=torch.int32), 0.5, backend="cpp")  # fmt: skip
    assert out.shape == (0, 4, 32) and out.dtype == torch.float32


def test_baseline_isa_kernels_match_reference():
    # ATEN_CPU_CAPABILITY=default makes csrc/cpu/paged_attention.cpp pick the baseline-ISA copy of the kernels; the
    # rest of this file runs the AVX2 copy wherever the CPU has AVX2.
    code = textwrap.dedent(
        """
        import torch
        from tao_engine import ops
        from tests.ops.test_paged_attention_cpp import assert_matches, paged_inputs, reference64
        assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
        for cache_dtype, d in ((torch.float32, 64), (torch.bfloat16, 128), (torch.float32, 36)):
            q, k, v, tables, ctx = paged_inputs([1, 17, 129], 16, 9, 3, d, cache_dtype, torch.float32, seed=d)
            out = ops.paged_decode_attention(q, k, v, tables, ctx, 0.125, backend="cpp")
            assert_matches(out, reference64(q, k, v, tables, ctx, 0.125))
        print("ok")
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=root
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_opcheck(cache_dtype):
    load_extension()
    q, k_cache, v_cache, tables, ctx = paged_inputs([17, 3], 8, 6, 2, 32, cache_dtype, cache_dtype, seed=8)
    torch.library.opcheck(torch.ops.tao_engine.paged_decode_attention.default, (q, k_cache, v_cache, tables, ctx, 0.3))


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_bad_shapes_raise_the_references_errors(backend):
    q, k_cache, v_cache, tables, ctx = paged_inputs([3, 5], 4, 6, 2, 32, torch.float32, torch.float32, seed=9)
    cases = [
        ((q[:, :5], k_cache, v_cache, tables, ctx), "q must be"),
        ((q, k_cache, v_cache, tables, ctx[:1]), "context_lens must be"),
        ((q, k_cache, v_cache[:, :2].contiguous(), tables, ctx), "k_cache and v_cache must both be"),
        ((q, k_cache, v_cache, tables.float(), ctx), "block_tables must be"),
        ((q[:1], k_cache, v_cache, tables, ctx), "one query per sequence"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            ops.paged_decode_attention(*args, 1.0, backend=backend)


def test_bad_values_raise_clear_errors():
    op = torch.ops.tao_engine.paged_decode_attention
    load_extension()
    q, k_cache, v_cache, tables, ctx = paged_inputs([3, 5], 4, 6, 2, 32, torch.float32, torch.float32, seed=10)
    assert k_cache.shape[0] == 6 and tables.shape[1] == 4
    bad = tables.clone()
    bad[1, -1] = 6  # a padding entry, as the reference's index_select reads those too
    with pytest.raises(IndexError, match=r"block_tables\[1, 3\] = 6 is out of range for a cache of 6 blocks"):
        op(q, k_cache, v_cache, bad, ctx, 1.0)
    bad[1, -1] = -1
    with pytest.raises(IndexError, match=r"block_tables\[1, 3\] = -1"):
        op(q, k_cache, v_cache, bad, ctx, 1.0)
    too_long = ctx.clone()
    too_long[0] = tables.shape[1] * 4 + 1
    with pytest.raises(ValueError, match=r"context_lens\[0\] = 17 does not fit"):
        op(q, k_cache, v_cache, tables, too_long, 1.0)
    with pytest.raises(ValueError, match="must be contiguous"):
        op(q, k_cache.transpose(0, 1), v_cache.transpose(0, 1), tables, ctx, 1.0)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        op(q.double(), k_cache, v_cache, tables, ctx, 1.0)
    with pytest.raises(RuntimeError, match="one dtype"):
        op(q, k_cache, v_cache.bfloat16(), tables, ctx, 1.0)


def test_supports_and_automatic_resolution():
    q, k_cache, v_cache, tables, ctx = paged_inputs([3, 5], 4, 6, 2, 32, torch.float32, torch.float32, seed=11)
    assert all_ops()["paged_decode_attention"].describe("cpu") == "cpp"
    with pytest.raises(BackendUnavailableError, match="float32, bfloat16 or float16"):
        ops.paged_decode_attention(q.double(), k_cache, v_cache, tables, ctx, 1.0, backend="cpp")
    with pytest.raises(BackendUnavailableError, match="contiguous"):
        ops.paged_decode_attention(q, k_cache[::2], v_cache[::2], tables // 2, ctx, 1.0, backend="cpp")
    # Automatic resolution runs cpp on supported calls and quietly falls back to the reference on the others.
    expected = reference64(q, k_cache, v_cache, tables, ctx, 1.0)
    assert_matches(ops.paged_decode_attention(q, k_cache, v_cache, tables, ctx, 1.0), expected)
    fallback = ops.paged_decode_attention(q.double(), k_cache, v_cache, tables, ctx, 1.0)
    assert fallback.dtype == torch.float64
    # The reference attends in the cache's dtype: q is rounded to fp32 and the math is fp32, the output fp64.
    check("paged_attention", fallback, expected[0], q=q.double(), k_cache=k_cache, v_cache=v_cache, tables=tables,
          lens=ctx, q_lens=[1] * q.shape[0], scale=1.0, output=torch.float64, half=torch.float32)
