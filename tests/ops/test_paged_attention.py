"""paged_decode_attention on every backend (torch reference, `cpp` csrc/cpu/paged_attention*.{h,cpp}, `triton`
kernels/paged_attention.py, flash-attn on a CUDA host) against the reference evaluated in fp64, itself checked against
an independent dense fp64 attention: odd batches and context lengths, block sizes, GQA, head dims (fast paths and
generic), fp32 / bf16 / fp16 caches and a q of another dtype, padding entries pointing at poisoned blocks, shared
blocks, split contexts and tiles, empty contexts and batches, bad input; the cpp op's per-ISA kernel copies, opcheck
and resolution; flash-attn's probe and refusals everywhere."""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch

from tao_engine import ops
from tao_engine.ops import paged_attention_flash as flash
from tao_engine.ops.extension import load_extension
from tao_engine.ops.registry import BackendUnavailableError, all_ops
from tao_engine.ops.triton_support import kernel_module
from tests.helpers import run_at_baseline_isa
from tests.ops.conftest import backends, cases
from tests.ops.paged_attention_cases import (
    assert_matches,
    decode_inputs,
    dense_reference,
    half_of,
    paged_inputs,
    reference64,
)
from tests.tolerances import check

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
# (lens, block_size, hq, hkv, d, cache dtype, q dtype) per backend: each backend's own sizes (triton's interpreter is
# slow), GQA groups, the cpp head-dim fast paths (32, 64, 128) and generic ones, q of another dtype than the cache.
TORCH_CASES = [(lens, bs, hq, hkv, 32, dt, dt) for lens in ([1, 7, 33, 129],) for bs in (1, 4, 16)
               for hq, hkv in ((6, 2), (4, 4)) for dt in (F32, BF16)]  # fmt: skip
CPP_CASES = [
    *((lens, bs, hq, hkv, d, dt, dt) for lens, bs, (hq, hkv), d, dt in itertools.product(
        ([300], [1, 16, 129], [1, 15, 16, 17, 129, 300, 7]), (16, 8), ((9, 3), (4, 4), (8, 1)), (64, 32), (F32, BF16))),
    *(([17, 1, 129], 16, 6, 2, d, dt, F32) for d in (128, 36, 7) for dt in (F32, BF16, F16)),
    *(([15, 300], 16, 9, 3, 64, cache, q) for q, cache in ((F32, BF16), (BF16, F32), (F16, F32))),
]  # fmt: skip
TRITON_CASES = [
    *((lens, bs, hq, hkv, d, dt, dt) for lens, bs, (hq, hkv), d, dt in itertools.product(
        ([17], [1, 15, 40]), (4, 16), ((4, 2), (3, 1)), (16, 32), (F32, BF16))),
    *(([1, 15, 40], 16, 3, 1, 16, cache, q) for q, cache in ((F32, BF16), (F16, F16))),
    ([15, 17], 4, 4, 2, 24, F32, F32),  # a head dim that is not a power of two
]  # fmt: skip
KERNELS = backends("cpp", "triton")


def _expected(backend, q, k, v, tables, ctx, scale):
    return reference64(q, k, v, tables, ctx, scale, half=half_of(backend, q, k))


@pytest.mark.parametrize(("backend", "lens", "block_size", "hq", "hkv", "d", "cache_dtype", "q_dtype"),
                         [*cases("torch", *TORCH_CASES), *cases("cpp", *CPP_CASES), *cases("triton", *TRITON_CASES)])
def test_matches_fp64_reference(backend, device, lens, block_size, hq, hkv, d, cache_dtype, q_dtype):
    seed = len(lens) * 1000 + block_size * 100 + hq * 10 + d
    q, k, v, tables, ctx = decode_inputs(lens, block_size, hq, hkv, d, cache_dtype, q_dtype, seed, device)
    scale = d**-0.5
    out = ops.paged_decode_attention(q, k, v, tables, ctx, scale, backend=backend)
    assert_matches(out, _expected(backend, q, k, v, tables, ctx, scale), f"paged_decode_attention {backend}")


@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize("query_lens", [[1, 1, 1, 1], [1, 3, 33, 50]], ids=["decode", "prefill"])
def test_reference_matches_dense_fp64(block_size, query_lens):
    # The reference is the specification: in fp64 it matches attention written out token by token.
    seqs = list(zip([1, 7, 33, 129], query_lens, strict=True))
    q, k, v, cu, tables, ctx = paged_inputs(seqs, block_size, 6, 2, 32, torch.float64, torch.float64, seed=block_size)
    prefill = query_lens != [1] * 4
    value = reference64(q, k, v, tables, ctx, 0.3, cu=cu if prefill else None, max_q=max(query_lens))[0]
    expected = dense_reference(q, k, v, tables, ctx, query_lens, 0.3)
    check("fp64_recomputation", value, expected)


@pytest.mark.parametrize("backend", backends("torch", "cpp", "triton"))
def test_int64_tables_and_lens(backend, device):
    q, k, v, tables, ctx = decode_inputs([129, 16, 1], 8, 4, 4, 32, F32, F32, seed=4, device=device,
                                         index=torch.int64)  # fmt: skip
    out = ops.paged_decode_attention(q, k, v, tables, ctx, 0.2, backend=backend)
    assert_matches(out, _expected(backend, q, k, v, tables, ctx, 0.2))


@pytest.mark.parametrize("backend", backends("triton"))
def test_padding_entries_are_never_read(backend, device):
    # Padding entries may hold anything, even ids past the cache: they must never be loaded. (The reference and cpp
    # read them, as index_select does, and refuse ids past the cache.)
    q, k, v, tables, ctx = decode_inputs([1, 15, 17], 4, 4, 2, 16, F32, F32, seed=11, device=device)
    expected = _expected(backend, q, k, v, tables, ctx, 0.25)
    for row, n in enumerate(ctx.tolist()):
        tables[row, -(-n // 4) :] = 10**9
    assert_matches(ops.paged_decode_attention(q, k, v, tables, ctx, 0.25, backend=backend), expected)


@pytest.mark.parametrize("backend", backends("torch", "cpp", "triton"))
def test_empty_context_gives_zeros_like_the_reference(backend, device):
    q, k, v, tables, ctx = decode_inputs([5, 17], 8, 4, 2, 32, F32, F32, seed=6, device=device)
    ctx[0] = 0
    expected = _expected(backend, q, k, v, tables, ctx, 0.5)
    assert torch.equal(expected[0][0], torch.zeros_like(expected[0][0]))
    out = ops.paged_decode_attention(q, k, v, tables, ctx, 0.5, backend=backend)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert_matches(out, expected)
    if backend == "triton":  # and with the context split: every partition of the empty sequence is empty
        out = kernel_module("paged_attention").paged_decode_attention(q, k, v, tables, ctx, 0.5, num_splits=3)
        assert_matches(out, expected)


@pytest.mark.parametrize("backend", backends("torch", "cpp", "triton"))
def test_empty_batch(backend, device):
    q, k, v, tables, ctx = decode_inputs([3], 8, 4, 2, 32, F32, F32, seed=7, device=device)
    out = ops.paged_decode_attention(q[:0], k, v, tables[:0], ctx[:0], 0.5, backend=backend)
    assert out.shape == (0, 4, 32) and out.dtype == torch.float32


@pytest.mark.parametrize("backend", backends("torch", "cpp", "triton"))
def test_bad_shapes_raise_the_references_errors(backend, device):
    q, k, v, tables, ctx = decode_inputs([3, 5], 4, 6, 2, 32, F32, F32, seed=9, device=device)
    bad = [
        ((q[:, :5], k, v, tables, ctx), "q must be|Hq a multiple of Hkv"),
        ((q, k, v, tables, ctx[:1]), "context_lens must be"),
        ((q, k, v[:, :2].contiguous(), tables, ctx), "k_cache and v_cache must both be"),
        ((q, k, v[:, :, :1].contiguous(), tables, ctx), "k_cache and v_cache must both be"),
        ((q, k, v, tables.float(), ctx), "block_tables must be"),
        ((q[:1], k, v, tables, ctx), "one query per sequence"),
    ]
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            ops.paged_decode_attention(*args, 1.0, backend=backend)


# ---- triton: split-K partitions, tiles, refusals


@pytest.mark.parametrize("num_splits", [2, 3, 7])
@pytest.mark.parametrize("cache_dtype", [F32, BF16])
@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_split_k_matches_fp64_reference(backend, device, num_splits, cache_dtype):
    # 7 splits of a 48-token table leave late partitions empty for the short sequences (and 1-token ones).
    q, k, v, tables, ctx = decode_inputs([1, 15, 40], 4, 4, 2, 16, cache_dtype, cache_dtype, seed=7, device=device)
    out = kernel_module("paged_attention").paged_decode_attention(q, k, v, tables, ctx, 0.25, num_splits=num_splits)
    assert_matches(out, _expected(backend, q, k, v, tables, ctx, 0.25))


@pytest.mark.parametrize("num_splits", [1, 2])
@pytest.mark.parametrize("cache_dtype", [F32, BF16])
@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_contexts_spanning_several_tiles(backend, device, num_splits, cache_dtype):
    # 16-token tiles: the 40-token context spans three of them (two per partition when split), so the running max
    # and sum are rescaled between tiles; the largest scores sit in the last tile to make that rescale matter.
    q, k, v, tables, ctx = decode_inputs([1, 15, 40], 4, 4, 2, 16, cache_dtype, cache_dtype, seed=17, device=device)
    last = tables[2, 9] * 4  # flat slot of position 36 of sequence 2
    k.view(-1, 2, 16)[last : last + 4] += q[2].view(2, 2, 16).sum(1).to(cache_dtype)  # align keys with the queries
    out = kernel_module("paged_attention").paged_decode_attention(
        q, k, v, tables, ctx, 0.5, num_splits=num_splits, block_n=16
    )
    assert_matches(out, _expected(backend, q, k, v, tables, ctx, 0.5))


@pytest.mark.triton
def test_triton_choose_num_splits():
    module = kernel_module("paged_attention")
    assert module.choose_num_splits(1, 2, 32, target=264) == 1  # short context: never split
    assert module.choose_num_splits(64, 8, 4096, target=264) == 1  # enough programs already
    assert module.choose_num_splits(1, 2, 4096, target=264) == 4096 // module.MIN_PARTITION  # >= MIN_PARTITION each
    assert module.choose_num_splits(2, 8, 32768, target=264) == 17  # enough splits to fill the device, no more
    assert module.choose_num_splits(1, 1, 10**7, target=10**4) == module.MAX_SPLITS
    assert module.choose_num_splits(4, 2, 10**5, target=1) == 1  # the interpreter's target


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_kernel_arguments_and_refusals(backend, device):
    q, k, v, tables, ctx = decode_inputs([15, 17], 4, 4, 2, 16, F32, F32, seed=2, device=device)
    with pytest.raises(ValueError, match="num_splits must be >= 1"):
        kernel_module("paged_attention").paged_decode_attention(q, k, v, tables, ctx, 0.25, num_splits=0)
    with pytest.raises(ValueError, match="block_n must be a power of two"):
        kernel_module("paged_attention").paged_decode_attention(q, k, v, tables, ctx, 0.25, block_n=24)
    with pytest.raises(BackendUnavailableError, match="k_cache has dtype torch.float64"):
        ops.paged_decode_attention(q, k.double(), v.double(), tables, ctx, 0.25, backend=backend)
    with pytest.raises(BackendUnavailableError, match="share one dtype"):
        ops.paged_decode_attention(q, k, v.bfloat16(), tables, ctx, 0.25, backend=backend)
    with pytest.raises(BackendUnavailableError, match="context_lens must be an integer tensor"):
        ops.paged_decode_attention(q, k, v, tables, ctx.float(), 0.25, backend=backend)


# ---- cpp: split contexts over threads, per-ISA copies, the compiled op


@pytest.mark.parametrize("cache_dtype", [F32, BF16])
@pytest.mark.parametrize("backend", backends("cpp"))
def test_cpp_split_contexts_match(backend, cache_dtype):
    # With few sequences per thread the kernel splits each context into ranges of blocks merged afterwards; 4 threads
    # make that happen on any machine. Lengths cover splits that end mid-block and splits left empty.
    q, k, v, tables, ctx = decode_inputs([2000, 300, 1], 16, 8, 2, 64, cache_dtype, F32, seed=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        split = ops.paged_decode_attention(q, k, v, tables, ctx, 0.125, backend=backend)
        single = ops.paged_decode_attention(q[:1], k, v, tables[:1], ctx[:1], 0.125, backend=backend)
    finally:
        torch.set_num_threads(threads)
    expected = _expected(backend, q, k, v, tables, ctx, 0.125)
    assert_matches(split, expected)
    assert_matches(single, (expected[0][:1], expected[1][:1], expected[2]))


@pytest.mark.ext
def test_cpp_baseline_isa_kernels_match_reference():
    # ATEN_CPU_CAPABILITY=default makes csrc/cpu/paged_attention.cpp pick the baseline-ISA copy of the kernels; the
    # rest of this file runs the AVX2 copy wherever the CPU has AVX2.
    code = (
        """
        import torch
        from tao_engine import ops
        from tests.ops.paged_attention_cases import assert_matches, decode_inputs, reference64
        for cache_dtype, d in ((torch.float32, 64), (torch.bfloat16, 128), (torch.float32, 36)):
            q, k, v, tables, ctx = decode_inputs([1, 17, 129], 16, 9, 3, d, cache_dtype, torch.float32, seed=d)
            out = ops.paged_decode_attention(q, k, v, tables, ctx, 0.125, backend="cpp")
            assert_matches(out, reference64(q, k, v, tables, ctx, 0.125))
        print("ok")
        """
    )
    assert run_at_baseline_isa(code).stdout.strip() == "ok"


@pytest.mark.ext
@pytest.mark.parametrize("cache_dtype", [F32, BF16])
def test_cpp_opcheck(cache_dtype):
    load_extension()
    q, k, v, tables, ctx = decode_inputs([17, 3], 8, 6, 2, 32, cache_dtype, cache_dtype, seed=8)
    torch.library.opcheck(torch.ops.tao_engine.paged_decode_attention.default, (q, k, v, tables, ctx, 0.3))


@pytest.mark.ext
def test_cpp_bad_values_raise_clear_errors():
    op = torch.ops.tao_engine.paged_decode_attention
    load_extension()
    q, k, v, tables, ctx = decode_inputs([3, 5], 4, 6, 2, 32, F32, F32, seed=10)
    blocks, width = k.shape[0], tables.shape[1]
    bad = tables.clone()
    bad[1, -1] = blocks  # a padding entry, as the reference's index_select reads those too
    with pytest.raises(IndexError, match=rf"block_tables\[1, {width - 1}\] = {blocks} is out of range for a cache "
                                         rf"of {blocks} blocks"):  # fmt: skip
        op(q, k, v, bad, ctx, 1.0)
    bad[1, -1] = -1
    with pytest.raises(IndexError, match=rf"block_tables\[1, {width - 1}\] = -1"):
        op(q, k, v, bad, ctx, 1.0)
    too_long = ctx.clone()
    too_long[0] = width * 4 + 1
    with pytest.raises(ValueError, match=rf"context_lens\[0\] = {width * 4 + 1} does not fit"):
        op(q, k, v, tables, too_long, 1.0)
    with pytest.raises(ValueError, match="must be contiguous"):
        op(q, k.transpose(0, 1), v.transpose(0, 1), tables, ctx, 1.0)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        op(q.double(), k, v, tables, ctx, 1.0)
    with pytest.raises(RuntimeError, match="one dtype"):
        op(q, k, v.bfloat16(), tables, ctx, 1.0)


@pytest.mark.ext
def test_cpp_supports_and_automatic_resolution():
    q, k, v, tables, ctx = decode_inputs([3, 5], 4, 6, 2, 32, F32, F32, seed=11)
    assert all_ops()["paged_decode_attention"].describe("cpu") == "cpp"
    with pytest.raises(BackendUnavailableError, match="float32, bfloat16 or float16"):
        ops.paged_decode_attention(q.double(), k, v, tables, ctx, 1.0, backend="cpp")
    with pytest.raises(BackendUnavailableError, match="contiguous"):
        ops.paged_decode_attention(q, k[::2], v[::2], tables // 2, ctx, 1.0, backend="cpp")
    # Automatic resolution runs cpp on supported calls and quietly falls back to the reference on the others.
    expected = reference64(q, k, v, tables, ctx, 1.0)
    assert_matches(ops.paged_decode_attention(q, k, v, tables, ctx, 1.0), expected)
    fallback = ops.paged_decode_attention(q.double(), k, v, tables, ctx, 1.0)
    assert fallback.dtype == torch.float64
    # The reference attends in the cache's dtype: q is rounded to fp32 and the math is fp32, the output fp64.
    check("paged_attention", fallback, expected[0], q=q.double(), k_cache=k, v_cache=v, tables=tables,
          lens=ctx, q_lens=[1] * q.shape[0], scale=1.0, output=torch.float64, half=torch.float32)


# ---- flash-attn (tao_engine/ops/paged_attention_flash.py): on a CUDA host with flash_attn, refusals everywhere

needs_flash_attn = pytest.mark.skipif(
    importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available(),
    reason="needs flash_attn and a CUDA device",
)
FLASH_BLOCK = 256  # flash-attn 2's paged KV takes multiples of 256 only


@needs_flash_attn
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [BF16, F16])
def test_flash_decode_matches_fp64_reference(dtype):
    q, k, v, tables, lens = decode_inputs([1, 300, 520], FLASH_BLOCK, 6, 2, 64, dtype, dtype, seed=2, device="cuda")
    out = flash.decode(q, k, v, tables, lens, 0.125)
    assert_matches(out, reference64(q, k, v, tables, lens, 0.125, half=dtype), "flash_attn decode")


def test_flash_probe_says_why_it_cannot_run_here():
    ok, why = flash.flash_attn_probe()
    if importlib.util.find_spec("flash_attn") is None:
        assert not ok and "flash_attn is not installed" in why
    elif not torch.cuda.is_available():
        assert not ok and "CUDA" in why


def test_flash_supports_refuses_what_flash_attn_cannot_run():
    # Checked on CPU tensors of the right shapes: each refusal names its reason before any flash_attn call.
    q, k, v, cu, tables, lens = paged_inputs([(13, 13), (300, 7)], FLASH_BLOCK, 6, 2, 64, BF16, BF16, seed=3)
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
