"""Paged decode attention in Triton: one query token per sequence against the block-table KV cache, GQA.

Layout (see tao_engine/ops/paged_attention.py): q [B, Hq, D]; k_cache, v_cache [num_blocks, block_size, Hkv, D];
block_tables [B, M] (int32 or int64); context_lens [B]. Sequence b attends to its first context_lens[b] positions;
position p lives at row p % block_size of block block_tables[b, p // block_size]. Table entries past the context are
padding and are never loaded (their loads are masked), so they may hold anything.

One program per (sequence, kv head, split): it handles the Hq / Hkv query heads of that kv head together, so each
K/V tile is loaded once for the whole group. Scores and the online softmax (running max, running sum, rescaled
accumulator) are in fp32 whatever the cache dtype; q is used at its own precision (not rounded to the cache dtype),
so a float32 q over a bfloat16 cache gets float32 accuracy on the cache's exact values.

Split-K: for few (sequence, kv head) pairs and long contexts, the context is cut into `num_splits` partitions, each
program writes its partial (max, sum, unnormalized acc) in fp32, and a second small kernel merges them with
log-sum-exp weights. An empty context (or partition) contributes nothing; an empty context gives zeros, like the
reference. A context length larger than the table's capacity (M x block_size) is clamped to it.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import cast_rne

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MIN_PARTITION = 256  # tokens per split-K partition at least: below that the merge costs more than it saves
MAX_SPLITS = 64
LOG2E = 1.4426950408889634


@triton.jit
def paged_position(table_row, pos, valid, block_size):
    """(block id, offset in the block) of context positions `pos` [BN], int64, through a sequence's block table row.
    Only table entries of valid positions (inside the context) are loaded; padding entries never are."""
    block = tl.load(table_row + pos // block_size, mask=valid, other=0).to(tl.int64)
    return block, (pos % block_size).to(tl.int64)


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_ptr, v_ptr, tables_ptr, lens_ptr, out_ptr, part_m_ptr, part_l_ptr, part_acc_ptr,
    q_sb, q_sh, q_sd, k_sblock, k_spos, k_shead, k_sd, v_sblock, v_spos, v_shead, v_sd, t_sb,
    scale_log2e, block_size, capacity, group, head_dim, partition_size, num_heads, num_splits,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, SPLIT: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    kvh = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)
    ctx = tl.minimum(tl.load(lens_ptr + b).to(tl.int32), capacity)
    start = split * partition_size
    end = tl.minimum(ctx, start + partition_size)

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    g_mask = g < group
    d_mask = d < head_dim
    heads = kvh * group + g  # [BG], the query heads of this kv head
    q_offs = b * q_sb + heads[:, None] * q_sh + d[None, :] * q_sd
    # Fold scale and log2(e) into q once: the softmax then runs on exp2.
    q = tl.load(q_ptr + q_offs, mask=g_mask[:, None] & d_mask[None, :], other=0.0).to(tl.float32) * scale_log2e

    m = tl.full([BLOCK_G], float("-inf"), tl.float32)  # running max of the scores (log2 units)
    s = tl.zeros([BLOCK_G], tl.float32)  # running sum of exp2(score - m)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)  # running sum of exp2(score - m) * v
    table_row = tables_ptr + b * t_sb
    for tile in range(start, end, BLOCK_N):
        pos = tile + n  # [BN]
        valid = pos < end
        block, within = paged_position(table_row, pos, valid, block_size)
        kv_mask = valid[:, None] & d_mask[None, :]
        k_rows = block * k_sblock + within * k_spos + kvh * k_shead  # [BN]
        k = tl.load(k_ptr + k_rows[:, None] + d[None, :] * k_sd, mask=kv_mask, other=0.0).to(tl.float32)  # [BN, BD]
        scores = tl.sum(q[:, None, :] * k[None, :, :], axis=2)  # [BG, BN]
        scores = tl.where(valid[None, :], scores, float("-inf"))
        # Every tile holds at least one valid position, so m_new is finite and exp2(m - m_new) is 0 on the first.
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(scores - m_new[:, None])  # [BG, BN]
        v_rows = block * v_sblock + within * v_spos + kvh * v_shead
        v = tl.load(v_ptr + v_rows[:, None] + d[None, :] * v_sd, mask=kv_mask, other=0.0).to(tl.float32)  # [BN, BD]
        s = s * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
        m = m_new

    out_mask = g_mask[:, None] & d_mask[None, :]
    if SPLIT:
        part = (b * num_heads + heads) * num_splits + split  # [BG], row of this (head, split) in the partials
        tl.store(part_m_ptr + part, m, mask=g_mask)
        tl.store(part_l_ptr + part, s, mask=g_mask)
        tl.store(part_acc_ptr + part[:, None] * head_dim + d[None, :], acc, mask=out_mask)
    else:
        out = tl.where(s[:, None] > 0, acc / tl.where(s > 0, s, 1.0)[:, None], 0.0)  # empty context -> zeros
        out_offs = (b * num_heads + heads[:, None]) * head_dim + d[None, :]
        tl.store(out_ptr + out_offs, cast_rne(out, out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _merge_splits_kernel(
    part_m_ptr, part_l_ptr, part_acc_ptr, out_ptr, num_splits, head_dim,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)  # one (sequence, query head)
    sp = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    s_mask = sp < num_splits
    d_mask = d < head_dim
    parts = row * num_splits + sp  # [BS]
    m = tl.load(part_m_ptr + parts, mask=s_mask, other=float("-inf"))
    s = tl.load(part_l_ptr + parts, mask=s_mask, other=0.0)
    acc_mask = s_mask[:, None] & d_mask[None, :]
    acc = tl.load(part_acc_ptr + parts[:, None] * head_dim + d[None, :], mask=acc_mask, other=0.0)  # [BS, BD]
    m_max = tl.max(m, axis=0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)  # every partition empty: all weights 0, output 0
    w = tl.exp2(m - m_max)  # [BS], 0 for empty partitions
    total = tl.sum(w * s, axis=0)
    out = tl.sum(w[:, None] * acc, axis=0) / tl.where(total > 0, total, 1.0)  # [BD]
    tl.store(out_ptr + row * head_dim + d, cast_rne(out, out_ptr.dtype.element_ty), mask=d_mask)


def target_programs(device: torch.device) -> int:
    """How many programs keep `device` busy: `gpu_programs` of its SMs on a GPU; 1 under the interpreter, which runs
    programs one after another, so splitting there only adds the merge."""
    if device.type == "cuda":
        return gpu_programs(torch.cuda.get_device_properties(device).multi_processor_count)
    return 1


def gpu_programs(compute_units: int) -> int:
    """Programs that keep a GPU of `compute_units` SMs (CUs) busy: two per SM, so one hides the other's latency."""
    return 2 * compute_units


def choose_num_splits(batch: int, kv_heads: int, max_context: int, target: int) -> int:
    """Split-K partitions per (sequence, kv head): 1 unless B * Hkv programs are fewer than `target` (see
    `target_programs`) and the context is long enough for each partition to hold at least MIN_PARTITION tokens."""
    pairs = max(batch * kv_heads, 1)
    if pairs >= target or max_context < 2 * MIN_PARTITION:
        return 1
    return max(1, min(-(-target // pairs), max_context // MIN_PARTITION, MAX_SPLITS))


# fp32 values of a register tile one thread may hold. bench/aot_check.py compiles every launcher choice for sm_90,
# sm_100 and gfx942: 64 per thread spilled (the decode tile at 4 warps on sm_100, and at a GQA group of 8 with
# head_dim 128 on sm_90; the split-K merge at 1 warp with 64 partitions of head_dim 128), 32 did not.
VALUES_PER_THREAD = 32


def _block_n(block_g: int, block_d: int) -> int:
    # Keep the [BG, BN, BD] product tile at most 8192 fp32 values, 8..128 tokens per tile.
    budget = max(8192 // (block_g * block_d), 1)
    return max(8, min(128, 1 << int(math.log2(budget))))


def tile_warps(tile_values: int, least: int, most: int) -> int:
    """Warps for a program whose largest register tile holds `tile_values` fp32 values: VALUES_PER_THREAD each."""
    return max(least, min(most, triton.next_power_of_2(max(tile_values // (32 * VALUES_PER_THREAD), 1))))


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    num_splits: int | None = None,
    block_n: int | None = None,
    programs: int | None = None,
) -> torch.Tensor:
    """[B, Hq, D] in q's dtype. Shapes are checked by the caller (the op's backend). `num_splits` forces the number
    of split-K partitions (1 = no split); None picks it with `choose_num_splits` for `programs` (None: the
    `target_programs` of q's device; bench/aot_check.py passes a GPU's that is not here). `block_n` forces the tokens
    per tile (a power of two; tests use it to make short contexts span several tiles)."""
    b, hq, d = q.shape
    block_size, hkv = k_cache.shape[1], k_cache.shape[2]
    group = hq // hkv
    capacity = block_tables.shape[1] * block_size  # the longest context the tables can describe
    if num_splits is None:
        num_splits = choose_num_splits(b, hkv, capacity, programs or target_programs(q.device))
    if num_splits < 1:
        raise ValueError(f"paged_decode_attention: num_splits must be >= 1, got {num_splits}")
    out = torch.empty((b, hq, d), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    block_g, block_d = triton.next_power_of_2(group), triton.next_power_of_2(d)
    if block_n is None:
        block_n = _block_n(block_g, block_d)
    if block_n < 1 or block_n & (block_n - 1):
        raise ValueError(f"paged_decode_attention: block_n must be a power of two, got {block_n}")
    partition = max(-(-capacity // num_splits), 1)
    if partition > block_n:  # whole tiles, so only a partition's last tile is ragged (always so when auto-chosen)
        partition = -(-partition // block_n) * block_n
    split = num_splits > 1
    part_m, part_l, part_acc = split_partials(out, num_splits)
    _paged_decode_kernel[(b, hkv, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, out, part_m, part_l, part_acc,
        *q.stride(), *k_cache.stride(), *v_cache.stride(), block_tables.stride(0),
        float(scale) * LOG2E, block_size, capacity, group, d, partition, hq, num_splits,
        BLOCK_G=block_g, BLOCK_N=block_n, BLOCK_D=block_d, SPLIT=split,
        num_warps=tile_warps(block_g * block_n * block_d, 4, 16),
    )  # fmt: skip
    if split:
        merge_splits(part_m, part_l, part_acc, out, num_splits, d, b * hq)
    return out


def split_partials(out: torch.Tensor, num_splits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split-K partials of an output [rows, H, D]: max and sum [rows, H, splits] and unnormalized acc [rows, H,
    splits, D], fp32. With one split the kernels get `out` in their place: SPLIT is a constexpr and those stores are
    compiled out."""
    if num_splits == 1:
        return out, out, out
    rows, heads, d = out.shape
    part_m = torch.empty((rows, heads, num_splits), dtype=torch.float32, device=out.device)
    part_acc = torch.empty((rows, heads, num_splits, d), dtype=torch.float32, device=out.device)
    return part_m, torch.empty_like(part_m), part_acc


def merge_splits(part_m: torch.Tensor, part_l: torch.Tensor, part_acc: torch.Tensor, out: torch.Tensor,
                 num_splits: int, head_dim: int, rows: int) -> None:
    """Combine the split-K partials of `rows` (token, head) rows into `out` (the decode and prefill kernels' merge)."""
    block_s, block_d = triton.next_power_of_2(num_splits), triton.next_power_of_2(head_dim)
    _merge_splits_kernel[(rows,)](
        part_m, part_l, part_acc, out, num_splits, head_dim,
        BLOCK_S=block_s, BLOCK_D=block_d, num_warps=tile_warps(block_s * block_d, 1, 8),
    )  # fmt: skip
