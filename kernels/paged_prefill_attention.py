"""Paged prefill / extend attention in Triton: packed ragged queries, causal against the block-table KV cache, GQA.

Layout (see tao_engine/ops/paged_attention.py): q [N, Hq, D] packed by cu_seqlens_q [B + 1]; k_cache, v_cache
[num_blocks, block_size, Hkv, D]; block_tables [B, M]; context_lens [B]. Sequence b's q_len_b = cu[b + 1] - cu[b]
queries are the LAST q_len_b tokens of its context: query j sits at position context_lens[b] - q_len_b + j and sees
cache positions 0..that position. A context longer than q_len ("extend") reads its cached prefix from the same
blocks, so the n samples of a prompt whose tables share the prompt's blocks read the same memory.

One program per (sequence, query tile, kv head), FlashAttention style. The rows of a tile are (query token, query head
of the GQA group) pairs, token-major: row r of sequence b is token r // group, head kvh * group + r % group. So the
whole group of query heads reads each K/V tile once, and a group of 3 wastes no padding rows (BLOCK_M need not be a
multiple of the group). Scores are one `tl.dot` per K tile ([BLOCK_M, D] x [D, BLOCK_N]); the online softmax (running
max, running sum, rescaled accumulator) runs in fp32 on exp2 with scale * log2(e) folded in. The loop over the cache
stops at the tile's last query position: K/V tiles wholly above the causal diagonal are never loaded.

Split-K, for few queries over long contexts (an extend of a few tokens after a 32k-token prompt): each tile's keys
are cut into `num_splits` partitions, one program each; they write fp32 partials (max, sum, unnormalized acc) that the
decode kernel's merge kernel combines with log-sum-exp weights. Chosen by the decode kernel's rule, so never under
the interpreter unless forced.

Precision: with a half cache and a half q, both dots run on half operands (tensor cores) with fp32 accumulation, q
rounded to the cache dtype as the reference does; the probabilities are rounded to it for the P x V dot and the
running sum adds those rounded values, so the output is a convex combination of V rows up to fp32 accumulation. A
float32 q or cache keeps everything in fp32 (IEEE products, no TF32): a float32 q over a bfloat16 cache gets float32
accuracy on the cache's exact values, like the decode kernel. A context length larger than the table's capacity
(M x block_size) is clamped to it; a query row that sees no position (a context shorter than its queries: bad input)
gets zeros.

Shared prompt blocks across sequences are not deduplicated inside one program (that would be cascade attention, which
needs the prompt groups as an input); the grid puts sequences on its fastest axis, so the programs of consecutive
sequences (a prompt's samples) run side by side and a GPU serves their shared blocks mostly from L2 (not yet measured
on a GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import cast_rne, interpreted
from .paged_attention import choose_num_splits, merge_splits, paged_position, split_partials, target_programs

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LOG2E = 1.4426950408889634


@triton.jit
def _dot(a, b, HALF_DOT: tl.constexpr, INTERPRET: tl.constexpr):
    """a @ b accumulated in fp32: on half operands (tensor cores) when HALF_DOT, else on fp32 operands with IEEE fp32
    products (no TF32). Under the interpreter half operands are widened first, since its dot multiplies bfloat16
    tensors as their raw uint16 bits; widening is exact and a GPU's half dot forms exact products too."""
    if HALF_DOT and not INTERPRET:
        return tl.dot(a, b)
    else:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")


@triton.jit
def _round(x, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """fp32 -> DTYPE rounding to nearest even; the interpreter's own cast truncates to bfloat16 (kernels/__init__)."""
    if INTERPRET:
        return cast_rne(x, DTYPE)
    else:
        return x.to(DTYPE)


@triton.jit
def _paged_prefill_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, cu_ptr, tables_ptr, lens_ptr, part_m_ptr, part_l_ptr, part_acc_ptr,
    q_sn, q_sh, q_sd, k_sblock, k_spos, k_shead, k_sd, v_sblock, v_spos, v_shead, v_sd, o_sn, o_sh, t_sb,
    scale_log2e, block_size, capacity, group, head_dim, num_heads, num_splits, partition_size,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HALF_DOT: tl.constexpr, INTERPRET: tl.constexpr, SPLIT: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    kvh = (tl.program_id(2) // num_splits).to(tl.int64)
    split = tl.program_id(2) % num_splits
    q_start = tl.load(cu_ptr + b).to(tl.int64)
    q_len = tl.load(cu_ptr + b + 1).to(tl.int32) - q_start.to(tl.int32)
    rows_total = q_len * group
    row0 = tile * BLOCK_M
    if row0 < rows_total:  # tiles past this sequence's queries (the grid fits the longest) do nothing
        ctx = tl.minimum(tl.load(lens_ptr + b).to(tl.int32), capacity)
        first_pos = ctx - q_len  # position of query 0: the cached prefix is [0, first_pos)

        r = row0 + tl.arange(0, BLOCK_M)  # [BM]
        d = tl.arange(0, BLOCK_D)
        n = tl.arange(0, BLOCK_N)
        row_mask = r < rows_total
        d_mask = d < head_dim
        token = r // group
        heads = kvh * group + r % group  # [BM]
        q_pos = first_pos + token  # [BM], each row's own position: it sees positions <= q_pos
        q_rows = (q_start + token) * q_sn + heads * q_sh
        q = tl.load(q_ptr + q_rows[:, None] + d[None, :] * q_sd, mask=row_mask[:, None] & d_mask[None, :], other=0.0)
        if HALF_DOT:  # the reference's q.to(cache dtype)
            q = cast_rne(q.to(tl.float32), k_ptr.dtype.element_ty)
        else:
            q = q.to(tl.float32)

        m = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max of the scores (log2 units)
        s = tl.zeros([BLOCK_M], tl.float32)  # running sum of exp2(score - m)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # running sum of exp2(score - m) * v
        last_row = tl.minimum(row0 + BLOCK_M, rows_total) - 1
        kv_end = tl.minimum(first_pos + last_row // group + 1, ctx)  # causal limit of the tile's last query
        lo = split * partition_size  # this program's share of [0, kv_end): all of it unless split-K
        hi = tl.minimum(kv_end, lo + partition_size)
        table_row = tables_ptr + b * t_sb
        for start in range(lo, hi, BLOCK_N):
            pos = start + n  # [BN]
            valid = pos < hi
            block, within = paged_position(table_row, pos, valid, block_size)
            kv_mask = valid[None, :] & d_mask[:, None]
            k_rows = block * k_sblock + within * k_spos + kvh * k_shead  # [BN]
            k_t = tl.load(k_ptr + k_rows[None, :] + d[:, None] * k_sd, mask=kv_mask, other=0.0)  # [BD, BN]
            scores = _dot(q, k_t, HALF_DOT, INTERPRET) * scale_log2e  # [BM, BN] fp32
            seen = valid[None, :] & (pos[None, :] <= q_pos[:, None])
            scores = tl.where(seen, scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=1))
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen nothing yet: no NaN
            alpha = tl.exp2(m - m_use)
            p = tl.exp2(scores - m_use[:, None])  # [BM, BN]
            if HALF_DOT:  # P in the cache dtype for the P x V dot; the sum below adds the rounded values
                p = _round(p, v_ptr.dtype.element_ty, INTERPRET)
            v_rows = block * v_sblock + within * v_spos + kvh * v_shead
            v_mask = valid[:, None] & d_mask[None, :]
            v = tl.load(v_ptr + v_rows[:, None] + d[None, :] * v_sd, mask=v_mask, other=0.0)  # [BN, BD]
            s = s * alpha + tl.sum(p.to(tl.float32), axis=1)
            acc = acc * alpha[:, None] + _dot(p, v, HALF_DOT, INTERPRET)
            m = m_new

        out_mask = row_mask[:, None] & d_mask[None, :]
        if SPLIT:  # partial (max, sum, unnormalized acc) per (token, head, split), merged by _merge_splits_kernel
            part = ((q_start + token) * num_heads + heads) * num_splits + split  # [BM]
            tl.store(part_m_ptr + part, m, mask=row_mask)
            tl.store(part_l_ptr + part, s, mask=row_mask)
            tl.store(part_acc_ptr + part[:, None] * head_dim + d[None, :], acc, mask=out_mask)
        else:
            out = tl.where(s[:, None] > 0, acc / tl.where(s > 0, s, 1.0)[:, None], 0.0)
            out_offs = (q_start + token)[:, None] * o_sn + heads[:, None] * o_sh + d[None, :]
            tl.store(out_ptr + out_offs, cast_rne(out, out_ptr.dtype.element_ty), mask=out_mask)


def choose_blocks(rows_per_seq: int, block_d: int, half_dot: bool) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps): as few query rows as the longest sequence needs (an extend of a few tokens wastes
    no tile), at most what fits the registers. The limits come from compiling for sm_90 with ptxas (no GPU was at
    hand to time them): with half dots, 128 x 64 tiles fit D <= 128 without spilling at 8 warps (under 255
    registers a thread) and 64 x 32 tiles fit D = 256; fp32 dots (FMA, no tensor cores) spill beyond 32 x 32 tiles at
    D = 64 and 16 x 32 at D = 128 or 256, at 8 warps."""
    if half_dot:
        max_m, block_n = (128, 64) if block_d <= 128 else (64, 32)
    else:
        max_m, block_n = (32, 32) if block_d <= 64 else (16, 32)
    block_m = min(max_m, max(16, triton.next_power_of_2(rows_per_seq)))
    num_warps = 8 if (block_m >= 128 or block_d >= 256 or not half_dot) else 4
    return block_m, block_n, num_warps


def paged_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    scale: float,
    block_m: int | None = None,
    block_n: int | None = None,
    num_splits: int | None = None,
    programs: int | None = None,
) -> torch.Tensor:
    """[N, Hq, D] in q's dtype. Shapes are checked by the caller (the op's backend). `block_m` / `block_n` force the
    tile sizes (powers of two >= 16; tests use them to make short inputs span several tiles). `num_splits` forces the
    split-K partitions of each tile's keys (1 = none); None picks them with the decode kernel's rule: only when the
    (query tile, kv head) programs are too few to fill `programs` (None: the `target_programs` of q's device;
    bench/aot_check.py passes a GPU's that is not here) and contexts are long."""
    n, hq, d = q.shape
    block_size, hkv = k_cache.shape[1], k_cache.shape[2]
    b = block_tables.shape[0]
    group = hq // hkv
    out = torch.empty((n, hq, d), dtype=q.dtype, device=q.device)
    if out.numel() == 0 or b == 0:
        return out
    block_d = max(16, triton.next_power_of_2(d))
    # Half dots (tensor cores) when the cache is half and q is too; a float32 q or cache keeps fp32 arithmetic.
    half_dot = k_cache.dtype != torch.float32 and q.dtype != torch.float32
    auto_m, auto_n, num_warps = choose_blocks(max_seqlen_q * group, block_d, half_dot)
    block_m, block_n = block_m or auto_m, block_n or auto_n
    for name, value in (("block_m", block_m), ("block_n", block_n)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"paged_prefill_attention: {name} must be a power of two >= 16, got {value}")
    capacity = block_tables.shape[1] * block_size
    if num_splits is None:
        tiles = max(b, -(-n * group // block_m))  # query tiles of the batch, about (no host sync on q lengths)
        num_splits = choose_num_splits(tiles, hkv, max_seqlen_k, programs or target_programs(q.device))
    if num_splits < 1:
        raise ValueError(f"paged_prefill_attention: num_splits must be >= 1, got {num_splits}")
    partition = max(-(-min(max_seqlen_k, capacity) // num_splits), 1)
    partition = -(-partition // block_n) * block_n  # whole key tiles per partition
    split = num_splits > 1
    part_m, part_l, part_acc = split_partials(out, num_splits)
    # Sequences vary fastest: the programs of a prompt's n samples (consecutive rows) run side by side on a GPU and
    # read the prompt's shared blocks at about the same time, so they mostly come from L2.
    grid = (b, triton.cdiv(max_seqlen_q * group, block_m), hkv * num_splits)
    _paged_prefill_kernel[grid](
        q, k_cache, v_cache, out, cu_seqlens_q, block_tables, context_lens, part_m, part_l, part_acc,
        *q.stride(), *k_cache.stride(), *v_cache.stride(), out.stride(0), out.stride(1), block_tables.stride(0),
        float(scale) * LOG2E, block_size, capacity, group, d, hq, num_splits, partition,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, HALF_DOT=half_dot,
        INTERPRET=interpreted(_paged_prefill_kernel), SPLIT=split, num_warps=num_warps, num_stages=2,
    )  # fmt: skip
    if split:
        merge_splits(part_m, part_l, part_acc, out, num_splits, d, n * hq)
    return out
