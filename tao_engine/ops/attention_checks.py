"""Argument checks of the paged attention ops, shared by their references and by every backend that does not check in
its kernel (ops/paged_attention.py, ops/paged_attention_flash.py), so bad input fails with one message whichever
backend runs. Each raises ValueError naming the argument, the shape it needs and the one it got.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_paged(
    op: str, q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, context_lens: Tensor, q_rows: str
) -> None:
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"{op}: k_cache and v_cache must both be [num_blocks, block_size, Hkv, D], got {tuple(k_cache.shape)} and "
            f"{tuple(v_cache.shape)}"
        )
    hkv, d = k_cache.shape[2], k_cache.shape[3]
    if q.dim() != 3 or q.shape[2] != d or q.shape[1] % hkv:
        raise ValueError(f"{op}: q must be [{q_rows}, Hq, {d}] with Hq a multiple of Hkv={hkv}, got {tuple(q.shape)}")
    if block_tables.dim() != 2 or block_tables.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"{op}: block_tables must be int32 [B, max_blocks], got {block_tables.dtype} {tuple(block_tables.shape)}"
        )
    if context_lens.shape != block_tables.shape[:1]:
        raise ValueError(
            f"{op}: context_lens must be [B={block_tables.shape[0]}] like block_tables' rows, got "
            f"{tuple(context_lens.shape)}"
        )


def check_decode(q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, context_lens: Tensor) -> None:
    _check_paged("paged_decode_attention", q, k_cache, v_cache, block_tables, context_lens, "B")
    if q.shape[0] != block_tables.shape[0]:
        raise ValueError(
            f"paged_decode_attention: q has {q.shape[0]} rows but block_tables {block_tables.shape[0]}; one query per "
            "sequence"
        )


def check_prefill(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, cu_seqlens_q: Tensor, block_tables: Tensor, context_lens: Tensor,
    max_seqlen_q: int, max_seqlen_k: int,
) -> None:  # fmt: skip
    _check_paged("paged_prefill_attention", q, k_cache, v_cache, block_tables, context_lens, "N")
    b = block_tables.shape[0]
    if cu_seqlens_q.shape != (b + 1,):
        raise ValueError(
            f"paged_prefill_attention: cu_seqlens_q must be [B + 1 = {b + 1}], got {tuple(cu_seqlens_q.shape)}"
        )
    block_size = k_cache.shape[1]
    if max_seqlen_q < 1 or max_seqlen_k < 1 or -(-max_seqlen_k // block_size) > block_tables.shape[1]:
        raise ValueError(
            f"paged_prefill_attention: need max_seqlen_q >= 1 and 1 <= max_seqlen_k <= block_tables width x "
            f"block_size ({block_tables.shape[1]} x {block_size}), got max_seqlen_q={max_seqlen_q}, "
            f"max_seqlen_k={max_seqlen_k}"
        )
