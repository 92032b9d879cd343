"""Paged KV cache write in Triton: new K/V rows into their cache slots, cast to the cache dtype.

k, v [N, Hkv, D] (any strides); k_cache, v_cache [num_blocks, block_size, Hkv, D], contiguous, so flat slot `s` is
row s of the cache viewed as [num_blocks * block_size, Hkv, D]; slot_mapping [N] int64. Row i goes to slot
slot_mapping[i]; a slot < 0 is skipped. A kernel cannot raise, so a slot past the cache's end (the reference's
IndexError) is skipped too rather than written out of bounds. Values are upcast to fp32 (exactly) and rounded to the
cache dtype to nearest even, as torch's `.to(dtype)` does.

One program per (row, tile of kv heads); a tile is [BLOCK_H, BLOCK_D] values, the whole head_dim at once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import cast_rne

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_TILE = 4096  # values per program


@triton.jit
def _write_kv_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slots_ptr,
    k_sn, k_sh, k_sd, v_sn, v_sh, v_sd, num_slots, num_heads, head_dim,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    slot = tl.load(slots_ptr + row).to(tl.int64)
    in_tile = (h[:, None] < num_heads) & (d[None, :] < head_dim)  # [BH, BD]
    # Broadcast the slot before comparing: the interpreter rejects the mask a scalar comparison makes.
    slots = tl.zeros([BLOCK_H, BLOCK_D], dtype=tl.int64) + slot
    mask = in_tile & (slots >= 0) & (slots < num_slots)
    # Contiguous cache: slot s, head h, dim d sits at (s * Hkv + h) * D + d.
    dst = (slot * num_heads + h[:, None]) * head_dim + d[None, :]
    k = tl.load(k_ptr + row * k_sn + h[:, None] * k_sh + d[None, :] * k_sd, mask=mask, other=0.0).to(tl.float32)
    tl.store(k_cache_ptr + dst, cast_rne(k, k_cache_ptr.dtype.element_ty), mask=mask)
    v = tl.load(v_ptr + row * v_sn + h[:, None] * v_sh + d[None, :] * v_sd, mask=mask, other=0.0).to(tl.float32)
    tl.store(v_cache_ptr + dst, cast_rne(v, v_cache_ptr.dtype.element_ty), mask=mask)


def write_kv_cache(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """In place. Shapes, dtypes and contiguity are checked by the caller (the op's backend)."""
    n, hkv, d = k.shape
    if n == 0:
        return
    block_d = triton.next_power_of_2(d)
    block_h = min(triton.next_power_of_2(hkv), max(MAX_TILE // block_d, 1))
    num_slots = k_cache.shape[0] * k_cache.shape[1]
    _write_kv_kernel[(n, triton.cdiv(hkv, block_h))](
        k, v, k_cache, v_cache, slot_mapping, *k.stride(), *v.stride(), num_slots, hkv, d,
        BLOCK_H=block_h, BLOCK_D=block_d, num_warps=4,
    )  # fmt: skip
