"""paged_prefill_attention on every backend (torch reference, `triton` kernels/paged_prefill_attention.py, flash-attn
on a CUDA host) against the reference evaluated in fp64 (itself checked against a dense fp64 attention in
tests/ops/test_paged_attention.py): ragged query lengths mixed with sequences that extend a cached prefix, block
sizes, GQA ratios, head dims 32 / 64 / 24, fp32 / bf16 / fp16, shuffled blocks, padding entries pointing at poisoned
blocks, n samples sharing one prompt's blocks, queries and keys spanning several tiles, split-K, sequences without
queries, bad input; one-token queries equal decode; with no cached prefix, varlen attention."""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch

from tao_engine import ops
from tao_engine.ops import paged_attention_flash as flash
from tao_engine.ops.registry import BackendUnavailableError
from tao_engine.ops.triton_support import kernel_module
from tests.ops.conftest import backends, cases
from tests.ops.paged_attention_cases import assert_matches, half_of, paged_inputs, reference64

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
# (context length, query length): the last q_len tokens of each context; q_len = ctx is a whole prompt.
TORCH_SEQS = [(1, 1), (7, 3), (33, 33), (129, 50)]
SEQS = [(13, 13), (40, 7), (7, 1), (29, 13)]  # a whole prompt, two extends of a cached prefix, a decode-like row
# (seqs, block_size, hq, hkv, d, cache dtype, q dtype) per backend; triton's interpreter is slow: short contexts
TORCH_CASES = [(TORCH_SEQS, bs, hq, hkv, 32, dt, dt) for bs in (1, 4, 16) for hq, hkv in ((6, 2), (4, 4))
               for dt in (F32, BF16)]  # fmt: skip
TRITON_CASES = [
    *((SEQS, bs, hq, hkv, d, dt, dt) for bs, (hq, hkv), d, dt in itertools.product(
        (8, 16), ((2, 2), (6, 2)), (32, 64), (F32, BF16))),
    *((SEQS, 16, 6, 2, 32, cache, q) for q, cache in ((F32, BF16), (F16, F16))),
    (SEQS, 8, 3, 1, 24, F32, F32),  # a head dim that is not a power of two
]  # fmt: skip
BACKENDS = backends("torch", "triton")


def _half(backend, q, k):
    return half_of("triton_prefill" if backend == "triton" else backend, q, k)


def _run(inputs, seqs, scale, backend):
    q, k, v, cu, tables, lens = inputs
    max_q, max_k = max(q_len for _, q_len in seqs), max(ctx for ctx, _ in seqs)
    return ops.paged_prefill_attention(q, k, v, cu, tables, lens, max_q, max_k, scale, backend=backend)


def _expected(inputs, seqs, scale, backend):
    q, k, v, cu, tables, lens = inputs
    return reference64(q, k, v, tables, lens, scale, half=_half(backend, q, k), cu=cu,
                       max_q=max(q_len for _, q_len in seqs))


@pytest.mark.parametrize(("backend", "seqs", "block_size", "hq", "hkv", "d", "cache_dtype", "q_dtype"),
                         [*cases("torch", *TORCH_CASES), *cases("triton", *TRITON_CASES)])
def test_matches_fp64_reference(backend, device, seqs, block_size, hq, hkv, d, cache_dtype, q_dtype):
    seed = block_size * 1000 + hq * 100 + d
    inputs = paged_inputs(seqs, block_size, hq, hkv, d, cache_dtype, q_dtype, seed, device)
    scale = d**-0.5
    assert_matches(_run(inputs, seqs, scale, backend), _expected(inputs, seqs, scale, backend),
                   f"paged_prefill_attention {backend}")


@pytest.mark.parametrize("cache_dtype", [F32, BF16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_samples_sharing_prompt_blocks(backend, device, cache_dtype):
    # Four samples of one 32-token prompt (2 shared blocks of 16): sample 0 prefills prompt + 5 completion tokens,
    # the others extend the cached prompt by 1, 7 and 13 tokens.
    seqs = [(37, 37), (33, 1), (39, 7), (45, 13)]
    inputs = paged_inputs(seqs, 16, 3, 1, 32, cache_dtype, cache_dtype, seed=21, device=device, shared_blocks=2)
    tables = inputs[4]
    assert bool((tables[:, :2] == tables[0, :2]).all())  # the prompt's blocks really are shared
    assert_matches(_run(inputs, seqs, 0.2, backend), _expected(inputs, seqs, 0.2, backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_token_queries_equal_decode(backend, device):
    seqs = [(1, 1), (15, 1), (40, 1)]
    inputs = paged_inputs(seqs, 8, 6, 2, 32, F32, F32, seed=9, device=device)
    q, k, v, cu, tables, lens = inputs
    prefill = _run(inputs, seqs, 0.25, backend)
    decode = ops.paged_decode_attention(q, k, v, tables, lens, 0.25, backend=backend)
    expected = _expected(inputs, seqs, 0.25, backend)
    for out in (prefill, decode):  # two fp32 computations of the same thing, each within the bound of fp64
        assert_matches(out, expected)


def test_prefill_of_whole_contexts_equals_varlen_attention():
    # With no cached prefix, reading K/V back from the cache must give what attending over them directly gives.
    seqs = [(7, 7), (33, 33), (1, 1)]
    inputs = paged_inputs(seqs, 4, 6, 2, 32, F32, F32, seed=5)
    q, k_cache, v_cache, cu, tables, lens = inputs
    slots = torch.cat([tables[b, torch.arange(n) // 4] * 4 + torch.arange(n) % 4 for b, (n, _) in enumerate(seqs)])
    k, v = k_cache.view(-1, 2, 32)[slots], v_cache.view(-1, 2, 32)[slots]
    dense = ops.varlen_causal_attention(q, k, v, cu, 33, 0.2, backend="torch")
    expected = _expected(inputs, seqs, 0.2, "torch")
    assert_matches(_run(inputs, seqs, 0.2, "torch"), expected)
    assert_matches(dense, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_shapes_raise_the_references_errors(backend, device):
    q, k, v, cu, tables, lens = paged_inputs(SEQS, 8, 4, 2, 32, F32, F32, seed=2, device=device)
    bad = [
        ((q, k, v[:, :, :1], cu, tables, lens, 13, 40), "k_cache and v_cache must both be"),
        ((q[:, :3], k, v, cu, tables, lens, 13, 40), "q must be|Hq a multiple of Hkv"),
        ((q, k, v, cu, tables.float(), lens, 13, 40), "block_tables must be"),
        ((q, k, v, cu, tables, lens[:1], 13, 40), "context_lens must be"),
        ((q, k, v, cu[:2], tables, lens, 13, 40), "cu_seqlens_q must be"),
        ((q, k, v, cu, tables, lens, 13, 10**4), "max_seqlen_k"),
        ((q, k, v, cu, tables, lens, 0, 40), "max_seqlen_q >= 1"),
    ]
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            ops.paged_prefill_attention(*args, 0.25, backend=backend)


# ---- triton: tiles, split-K, index dtypes and padding, refusals


@pytest.mark.parametrize("cache_dtype", [F32, BF16])
@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_queries_and_keys_spanning_several_tiles(backend, device, cache_dtype):
    # 16-row and 16-key tiles: 13 queries x 3 heads = 39 rows span 3 query tiles (a tile boundary inside a token's
    # heads), and the 40-token contexts span 3 key tiles. The largest scores sit in the last key tile, so the
    # running max and sum must be rescaled between tiles.
    seqs = [(40, 13), (40, 1), (17, 13)]
    inputs = paged_inputs(seqs, 8, 3, 1, 32, cache_dtype, cache_dtype, seed=17, device=device)
    q, k, v, cu, tables, lens = inputs
    slot = tables[0, 4] * 8  # positions 32..39 of sequence 0
    k.view(-1, 1, 32)[slot : slot + 8] += q[0].sum(0).to(cache_dtype) * 0.5  # keys aligned with the queries
    out = kernel_module("paged_prefill_attention").paged_prefill_attention(
        q, k, v, cu, tables, lens, 13, 40, 0.3, block_m=16, block_n=16
    )
    assert_matches(out, _expected(inputs, seqs, 0.3, backend))


@pytest.mark.parametrize("num_splits", [2, 3, 7])
@pytest.mark.parametrize("cache_dtype", [F32, BF16])
@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_split_k_matches_fp64_reference(backend, device, num_splits, cache_dtype):
    # 16-key partitions of a 48-token range (7 splits: 16 each, the last ones empty for every tile), short and long
    # contexts, tiles whose causal limit ends inside, or before, a partition.
    seqs = [(48, 13), (40, 1), (7, 7), (29, 13)]
    inputs = paged_inputs(seqs, 8, 3, 1, 32, cache_dtype, cache_dtype, seed=23 + num_splits, device=device)
    out = kernel_module("paged_prefill_attention").paged_prefill_attention(
        *inputs, 13, 48, 0.3, block_m=16, block_n=16, num_splits=num_splits
    )
    assert_matches(out, _expected(inputs, seqs, 0.3, backend))


@pytest.mark.triton
def test_triton_choose_num_splits_for_prefill():
    # The decode kernel's rule over (query tiles x kv heads): never on the interpreter (target 1), on a big GPU only
    # for few tiles over long contexts.
    module = kernel_module("paged_attention")
    assert module.choose_num_splits(1, 2, 32768, target=1) == 1
    assert module.choose_num_splits(1, 8, 32768, target=264) > 1  # one short extend over a 32k prompt
    assert module.choose_num_splits(64, 8, 32768, target=264) == 1  # a long prefill fills the GPU by itself


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_int64_indices_empty_query_rows_and_padding_never_read(backend, device):
    # A sequence with no queries this step (q_len 0) sits between two others; padding table entries point past the
    # cache: they must never be loaded.
    seqs = [(9, 4), (20, 0), (23, 7)]
    inputs = paged_inputs(seqs, 8, 4, 2, 32, F32, F32, seed=11, device=device, index=torch.int64)
    expected = _expected(inputs, seqs, 0.25, backend)
    tables = inputs[4]
    for row, (ctx, _) in enumerate(seqs):
        tables[row, -(-ctx // 8) :] = 10**9
    assert_matches(_run(inputs, seqs, 0.25, backend), expected)


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_kernel_arguments_and_refusals(backend, device):
    q, k, v, cu, tables, lens = paged_inputs(SEQS, 8, 4, 2, 32, F32, F32, seed=4, device=device)
    module = kernel_module("paged_prefill_attention")
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        module.paged_prefill_attention(q, k, v, cu, tables, lens, 13, 40, 0.25, 24)
    with pytest.raises(ValueError, match="num_splits must be >= 1"):
        module.paged_prefill_attention(q, k, v, cu, tables, lens, 13, 40, 0.25, num_splits=0)
    bounds_ = (13, 40, 0.25)
    with pytest.raises(BackendUnavailableError, match="k_cache has dtype torch.float64"):
        ops.paged_prefill_attention(q, k.double(), v.double(), cu, tables, lens, *bounds_, backend=backend)
    with pytest.raises(BackendUnavailableError, match="share one dtype"):
        ops.paged_prefill_attention(q, k, v.bfloat16(), cu, tables, lens, *bounds_, backend=backend)
    with pytest.raises(BackendUnavailableError, match="cu_seqlens_q must be int32 or int64"):
        ops.paged_prefill_attention(q, k, v, cu.float(), tables, lens, *bounds_, backend=backend)
    wide = torch.zeros(2, 8, 1, 512, dtype=torch.float32, device=q.device)
    with pytest.raises(BackendUnavailableError, match="head dim D must be <= 256"):
        ops.paged_prefill_attention(q.new_zeros(1, 1, 512), wide, wide, cu[:2], tables[:1, :1], lens[:1], 1, 1, 1.0,
                                    backend=backend)  # fmt: skip


# ---- flash-attn (tao_engine/ops/paged_attention_flash.py)

FLASH_BLOCK = 256  # flash-attn 2's paged KV takes multiples of 256 only


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available(),
                    reason="needs flash_attn and a CUDA device")
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [BF16, F16])
def test_flash_prefill_matches_fp64_reference(dtype):
    seqs = [(13, 13), (300, 7), (257, 1), (520, 129)]  # whole prompts and extends of a cached prefix
    inputs = paged_inputs(seqs, FLASH_BLOCK, 6, 2, 64, dtype, dtype, seed=1, device="cuda")
    q, k, v, cu, tables, lens = inputs
    out = flash.prefill(q, k, v, cu, tables, lens, 129, 520, 0.125)
    # flash-attn: half dots (half q and weights) accumulated in fp32, one rounding into the output.
    assert_matches(out, _expected(inputs, seqs, 0.125, "flash_attn"), "flash_attn prefill")


def test_asking_for_flash_attn_where_it_cannot_run_names_the_reason():
    # Registered outside the default order: never picked quietly, and an explicit request without flash_attn (or on
    # CPU tensors) must refuse with the probe's or supports' reason instead of running something else.
    seqs = [(5, 2)]
    inputs = paged_inputs(seqs, 4, 4, 2, 32, F32, F32, seed=3)
    with pytest.raises(BackendUnavailableError, match="flash_attn"):
        _run(inputs, seqs, 0.125, "flash_attn")
    default = _run(inputs, seqs, 0.125, None)
    assert_matches(default, _expected(inputs, seqs, 0.125, "cpp"))
