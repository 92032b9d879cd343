"""flash-attn 2 (the optional `flash_attn` package) behind the contracts of paged_prefill_attention and
paged_decode_attention. UNVERIFIED: written on a machine with neither a GPU nor flash_attn; its tests
(tests/ops/test_paged_attention.py, tests/ops/test_paged_prefill_attention.py) compare it with the fp64 reference
and skip where flash_attn is missing.

The mapping needs no copy of the cache: our layout [num_blocks, block_size, Hkv, D] is flash-attn's paged layout
(num_blocks, page_block_size, nheads_k, headdim), and flash-attn's causal mask is aligned to the bottom right corner
(query i of q_len sees keys up to context_len - q_len + i), which is our contract.
- prefill: flash_attn_varlen_func(q, k_cache, v_cache, cu_seqlens_q, cu_seqlens_k, ..., causal=True, block_table)
  with cu_seqlens_k = [0, cumsum(context_lens)] (with a block table, K/V come from the pages, not from packed rows);
- decode: flash_attn_with_kvcache(q[:, None], k_cache, v_cache, cache_seqlens=context_lens, block_table, causal=True).
flash-attn's limits, refused by `supports`: CUDA tensors, q and both caches one dtype, bfloat16 or float16; head dim
a multiple of 8 up to 256; a page (block) size that is a multiple of 256 (flash-attn 2's paged KV rule: the engine's
default block_size of 16 is not, so this backend serves only caches allocated with block_size 256, 512, ...).
Tables and lengths are converted to int32 (small copies) as flash-attn requires.

Registered as backend "flash_attn" of both ops (end of ops/paged_attention.py), outside the default preference
order: it runs only when asked for (backend="flash_attn", use_backend or TAO_BACKEND) until a GPU run measures it.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor

from tao_engine.ops.attention_checks import check_decode, check_prefill

FLASH_DTYPES = (torch.bfloat16, torch.float16)
PAGE_MULTIPLE = 256  # flash-attn 2: "page_block_size must be a multiple of 256"
MAX_HEAD_DIM = 256


def flash_attn_probe() -> tuple[bool, str]:
    """flash_attn imports and a CUDA device is visible (imported here, on first use, never at import of tao_engine)."""
    if importlib.util.find_spec("flash_attn") is None:
        return False, "flash_attn is not installed (optional: `pip install flash-attn --no-build-isolation`)"
    if not torch.cuda.is_available():
        return False, "flash_attn runs on CUDA only and no CUDA device is visible"
    try:
        importlib.import_module("flash_attn")
    except Exception as exc:  # a wheel built for another torch or CUDA fails with anything from ImportError to OSError
        return False, f"flash_attn is installed but fails to import: {exc}"
    return True, "flash_attn with a CUDA device"


def supports(q: Tensor, k_cache: Tensor, v_cache: Tensor, *rest: object) -> tuple[bool, str]:
    """Either op's arguments in order (q, k_cache, v_cache, then its index tensors and scalars)."""
    index = [t for t in rest if isinstance(t, Tensor)]  # block tables, lengths (and prefill's cu_seqlens_q)
    tensors = (q, k_cache, v_cache, *index)
    if q.device.type != "cuda" or any(t.device != q.device for t in tensors):
        return False, f"every tensor must be on one CUDA device, got {[str(t.device) for t in tensors]}"
    if q.dtype not in FLASH_DTYPES or k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        return False, (
            f"q and both caches must share one dtype, bfloat16 or float16, got q {q.dtype}, k_cache {k_cache.dtype}, "
            f"v_cache {v_cache.dtype}"
        )
    if any(t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool for t in index):
        return False, f"block tables and lengths must be integer tensors, got {[t.dtype for t in index]}"
    if k_cache.dim() == 4:
        block_size, d = k_cache.shape[1], k_cache.shape[3]
        if block_size % PAGE_MULTIPLE:
            return False, f"flash-attn's paged KV needs block_size a multiple of {PAGE_MULTIPLE}, got {block_size}"
        if d % 8 or d > MAX_HEAD_DIM:
            return False, f"head dim D must be a multiple of 8 up to {MAX_HEAD_DIM}, got {d}"
        if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
            return False, "k_cache and v_cache need a contiguous last dimension"
    return True, ""


prefill_supports = decode_supports = supports  # one check serves both argument lists


def prefill(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, cu_seqlens_q: Tensor, block_tables: Tensor, context_lens: Tensor,
    max_seqlen_q: int, max_seqlen_k: int, scale: float,
) -> Tensor:  # fmt: skip
    """paged_prefill_attention on flash_attn_varlen_func: [N, Hq, D] in q's dtype."""
    check_prefill(q, k_cache, v_cache, cu_seqlens_q, block_tables, context_lens, max_seqlen_q, max_seqlen_k)
    from flash_attn import flash_attn_varlen_func

    cu_seqlens_k = F.pad(context_lens.cumsum(0, dtype=torch.int32), (1, 0))  # [B + 1], per-sequence key counts
    return flash_attn_varlen_func(
        q,
        k_cache,
        v_cache,
        cu_seqlens_q.to(torch.int32),
        cu_seqlens_k,
        int(max_seqlen_q),
        int(max_seqlen_k),
        softmax_scale=float(scale),
        causal=True,
        block_table=block_tables.to(torch.int32),
    )


def decode(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, context_lens: Tensor, scale: float
) -> Tensor:
    """paged_decode_attention on flash_attn_with_kvcache: [B, Hq, D] in q's dtype."""
    check_decode(q, k_cache, v_cache, block_tables, context_lens)
    from flash_attn import flash_attn_with_kvcache

    out = flash_attn_with_kvcache(
        q.unsqueeze(1),  # [B, 1, Hq, D]: one new token per sequence, the last of its context
        k_cache,
        v_cache,
        cache_seqlens=context_lens.to(torch.int32),
        block_table=block_tables.to(torch.int32),
        softmax_scale=float(scale),
        causal=True,
    )
    return out.squeeze(1)
