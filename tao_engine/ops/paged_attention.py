"""Attention that reads keys and values from the paged KV cache through per-sequence block tables.

Cache layout (see kv_cache.py): k_cache, v_cache [num_blocks, block_size, Hkv, D]. Sequence b's context is the first
context_lens[b] positions of the blocks block_tables[b] lists, in order; table entries past the context are padding
(any valid block id, 0 by convention) and are never attended to. Hq is a multiple of Hkv (GQA).

The torch references gather each sequence's blocks into a padded [B, L, Hkv, D] tensor (L = blocks x block_size) and
run one batched SDPA with a boolean mask: no Python loop over sequences and no host sync. Decode reads every column
of `block_tables`, so callers pad the tables to the batch's longest context, not to a global maximum (prefill reads
only the columns max_seqlen_k needs). SDPA computes the softmax in fp32 for half-precision inputs; the output has q's
dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tao_engine.ops.attention_checks import check_decode, check_prefill
from tao_engine.ops.registry import define_op


def _gather_context(cache: torch.Tensor, block_tables: torch.Tensor) -> torch.Tensor:
    # cache [num_blocks, bs, Hkv, D], tables [B, M] -> [B, Hkv, M * bs, D] (a view for SDPA, no extra copy)
    b, m = block_tables.shape
    # index_select over the flattened table is several times faster on CPU than advanced indexing.
    gathered = cache.index_select(0, block_tables.reshape(-1))  # [B * M, bs, Hkv, D]
    return gathered.view(b, m * cache.shape[1], cache.shape[2], cache.shape[3]).transpose(1, 2)


def paged_decode_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """One query token per sequence (the last of its context) -> [B, Hq, D]. q [B, Hq, D]; context_lens >= 1."""
    check_decode(q, k_cache, v_cache, block_tables, context_lens)
    b, hq, d = q.shape
    keys = _gather_context(k_cache, block_tables)  # [B, Hkv, L, D]
    values = _gather_context(v_cache, block_tables)
    hkv = keys.shape[1]
    positions = torch.arange(keys.shape[2], device=q.device)
    mask = (positions < context_lens.unsqueeze(1))[:, None, None, :]  # [B, 1, 1, L]
    # Query head h reads kv head h // (Hq / Hkv): viewing q as [B, Hkv, Hq / Hkv, D] makes each group of query heads
    # the "query rows" of its kv head, so GQA needs no expansion of K/V.
    grouped = q.to(keys.dtype).reshape(b, hkv, hq // hkv, d)
    out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask, scale=scale)  # [B, Hkv, Hq/Hkv, D]
    return out.reshape(b, hq, d).to(q.dtype)


def paged_prefill_attention_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    scale: float,
) -> torch.Tensor:
    """Packed queries [N, Hq, D] -> [N, Hq, D]; sequence b's queries are the LAST q_len_b tokens of its context.

    Query j of sequence b sits at position context_lens[b] - q_len_b + j and attends causally to cache positions up to
    its own (already written). max_seqlen_q / max_seqlen_k bound q_len and context_lens over the batch.
    """
    check_prefill(q, k_cache, v_cache, cu_seqlens_q, block_tables, context_lens, max_seqlen_q, max_seqlen_k)
    b, block_size = block_tables.shape[0], k_cache.shape[1]
    num_blocks = -(-max_seqlen_k // block_size)
    n, device = q.shape[0], q.device
    q_lens = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).long()  # [B]
    # Packed row i -> (sequence, index within its queries); output_size avoids a host sync on CUDA.
    seq_of_row = torch.repeat_interleave(torch.arange(b, device=device), q_lens, output_size=n)  # [N]
    j_of_row = torch.arange(n, device=device) - cu_seqlens_q.long()[seq_of_row]  # [N]
    padded_q = q.new_zeros(b, max_seqlen_q, *q.shape[1:])  # [B, Tq, Hq, D]
    padded_q[seq_of_row, j_of_row] = q

    keys = _gather_context(k_cache, block_tables[:, :num_blocks])  # [B, Hkv, L, D]
    values = _gather_context(v_cache, block_tables[:, :num_blocks])
    j = torch.arange(max_seqlen_q, device=device)
    q_pos = (context_lens.long() - q_lens).unsqueeze(1) + j  # [B, Tq], position of each query in its sequence
    # Padding query rows (j >= q_len) would see no key and give NaN: let them see every position; they are dropped.
    q_pos = torch.where(j < q_lens.unsqueeze(1), q_pos, keys.shape[2])
    mask = torch.arange(keys.shape[2], device=device) <= q_pos.unsqueeze(2)  # [B, Tq, L]
    out = F.scaled_dot_product_attention(
        padded_q.transpose(1, 2).to(keys.dtype),
        keys,
        values,
        attn_mask=mask.unsqueeze(1),
        scale=scale,
        enable_gqa=q.shape[1] != keys.shape[1],
    )  # [B, Hq, Tq, D]
    return out.transpose(1, 2)[seq_of_row, j_of_row].to(q.dtype)


paged_decode_attention = define_op("paged_decode_attention", paged_decode_attention_reference)
paged_prefill_attention = define_op("paged_prefill_attention", paged_prefill_attention_reference)


# --- cpp and cuda backends of paged_decode_attention (csrc/cpu/paged_attention*.{h,cpp}; csrc/cuda/paged_attention*.
# {cu,cpp}, one block per (sequence, query head), table entries and context lengths asserted on the device): one op in
# tao_engine._C, `torch.ops.tao_engine.paged_decode_attention`, with a fake kernel (below); inference only. The
# extension loads in the probe, on first use, never at import time. Shape errors are the kernel's, with the
# reference's messages (ValueError); `supports` refuses only what the kernel cannot run.
from tao_engine.ops.extension import cpu_backend_probe, cuda_backend_probe  # noqa: E402

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_CUDA_MAX_HEAD_DIM = 256  # csrc/cuda/paged_attention_launch.h kMaxHeadDim


def _paged_decode_attention_compiled(a: Any) -> torch.Tensor:
    return torch.ops.tao_engine.paged_decode_attention(*a[:5], float(a.scale))


def _integer_lengths(a: Any) -> tuple[bool, str]:
    lens = a.context_lens
    if lens.dtype.is_floating_point or lens.dtype.is_complex or lens.dtype == torch.bool:
        return False, f"context_lens must be an integer tensor, got {lens.dtype}"
    return True, ""


def _compiled_supports(a: Any, device_type: str) -> tuple[bool, str]:
    q, k_cache, v_cache = a.q, a.k_cache, a.v_cache
    tensors = a[:5]
    if q.device.type != device_type or any(t.device != q.device for t in tensors):
        where = "on the CPU" if device_type == "cpu" else "on one CUDA device"
        return False, f"every tensor must be {where}, got {[str(t.device) for t in tensors]}"
    if q.dtype not in _DTYPES or k_cache.dtype not in _DTYPES or v_cache.dtype != k_cache.dtype:
        return False, (
            f"q and the caches must be float32, bfloat16 or float16 (both caches alike), got q {q.dtype}, k_cache "
            f"{k_cache.dtype}, v_cache {v_cache.dtype}"
        )
    ok, why = _integer_lengths(a)
    if not ok:
        return ok, why
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        return False, "k_cache and v_cache must be contiguous (allocate them with allocate_kv_caches)"
    if device_type == "cuda" and k_cache.dim() == 4 and k_cache.shape[3] > _CUDA_MAX_HEAD_DIM:
        return False, f"head dim D must be <= {_CUDA_MAX_HEAD_DIM}, got {k_cache.shape[3]}"
    return True, ""


paged_decode_attention.register(
    "cpp", _paged_decode_attention_compiled, cpu_backend_probe, lambda a: _compiled_supports(a, "cpu")
)
paged_decode_attention.register(
    "cuda", _paged_decode_attention_compiled, cuda_backend_probe, lambda a: _compiled_supports(a, "cuda")
)


# --- triton backends (kernels/paged_attention.py, kernels/paged_prefill_attention.py: causal FlashAttention-style
# tiles over the paged cache, the GQA group of query heads of a kv head together); the kernel modules are imported on
# first call, never at import time. Shape errors are the reference's (ValueError); `supports` refuses only what the
# kernel cannot run. The decode kernel picks split-K by itself for few (sequence, kv head) pairs and long contexts.
from tao_engine.ops import triton_support  # noqa: E402


def _paged_decode_attention_triton(a: Any) -> torch.Tensor:
    check_decode(*a[:5])
    kernels = triton_support.kernel_module("paged_attention")
    return kernels.paged_decode_attention(*a[:5], float(a.scale))


def _paged_prefill_attention_triton(a: Any) -> torch.Tensor:
    check_prefill(*a[:8])
    kernels = triton_support.kernel_module("paged_prefill_attention")
    bounds = (int(a.max_seqlen_q), int(a.max_seqlen_k), float(a.scale))
    return kernels.paged_prefill_attention(*a[:6], *bounds)


def _triton_supports(a: Any) -> tuple[bool, str]:
    """Either op's arguments (their fields share names): device, dtypes, integer lengths."""
    ok, why = triton_support.device_supported(a.q, a.k_cache, a.v_cache, a.block_tables, a.context_lens)
    if not ok:
        return ok, why
    for name, t in (("q", a.q), ("k_cache", a.k_cache), ("v_cache", a.v_cache)):
        ok, why = triton_support.dtype_supported(name, t, _DTYPES)
        if not ok:
            return ok, why
    if a.v_cache.dtype != a.k_cache.dtype:
        return False, f"k_cache and v_cache must share one dtype, got {a.k_cache.dtype} and {a.v_cache.dtype}"
    return _integer_lengths(a)


def _prefill_triton_supports(a: Any) -> tuple[bool, str]:
    ok, why = _triton_supports(a)
    if not ok:
        return ok, why
    cu = a.cu_seqlens_q
    if cu.device != a.q.device or cu.dtype not in (torch.int32, torch.int64):
        return False, f"cu_seqlens_q must be int32 or int64 on q's device, got {cu.dtype} on {cu.device}"
    if a.k_cache.dim() == 4 and a.k_cache.shape[3] > 256:
        return False, f"head dim D must be <= 256 (one K/V tile row in registers), got {a.k_cache.shape[3]}"
    return True, ""


paged_decode_attention.register(
    "triton", _paged_decode_attention_triton, triton_support.triton_probe, _triton_supports
)
paged_prefill_attention.register(
    "triton", _paged_prefill_attention_triton, triton_support.triton_probe, _prefill_triton_supports
)

# flash-attn 2 (optional, GPU): chosen only when asked for (backend="flash_attn", use_backend or TAO_BACKEND) until
# a GPU run has measured it against cuda/triton; see ops/paged_attention_flash.py for its limits (pages of 256+).
from tao_engine.ops import paged_attention_flash as _flash  # noqa: E402


def _flash_supports(a: Any) -> tuple[bool, str]:
    return _flash.supports(*a)  # flash-attn's adapters take the ops' arguments in order, as flash_attn's own do


paged_prefill_attention.register("flash_attn", lambda a: _flash.prefill(*a), _flash.flash_attn_probe, _flash_supports)
paged_decode_attention.register("flash_attn", lambda a: _flash.decode(*a), _flash.flash_attn_probe, _flash_supports)


# Inference only: a fake kernel, no autograd formula. Applied when `_C` loads (ops/extension.py).
def _paged_decode_attention_fake(q: Tensor, k_cache: Tensor, *rest: Any) -> Tensor:
    torch._check_value(
        q.dim() == 3 and k_cache.dim() == 4 and q.shape[2] == k_cache.shape[3],
        lambda: f"paged_decode_attention: q must be [B, Hq, D] and k_cache [num_blocks, block_size, Hkv, D], got "
        f"{tuple(q.shape)} and {tuple(k_cache.shape)}",
    )
    return q.new_empty(q.shape)  # [B, Hq, D], contiguous, q's dtype


paged_decode_attention.register_compiled("tao_engine::paged_decode_attention", _paged_decode_attention_fake)
