"""Paged KV cache writes: store the new tokens' K/V in their slots, and copy whole blocks (copy-on-write).

Cache layout (one pair per layer): k_cache, v_cache [num_blocks, block_size, Hkv, D]. Token position p of a sequence
lives in flat slot `block_table[p // block_size] * block_size + p % block_size`, i.e. row `slot` of the cache viewed
as [num_blocks * block_size, Hkv, D].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tao_engine.ops.registry import define_op


def _check_cache_pair(op: str, k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"{op}: k_cache and v_cache must both be [num_blocks, block_size, Hkv, D], got "
            f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        # The flat-slot view below needs contiguous storage; allocate_kv_caches always gives that.
        raise ValueError(f"{op}: k_cache and v_cache must be contiguous (allocate them with allocate_kv_caches)")


def _check_write_kv_cache(k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, slot_mapping: Tensor) -> None:
    _check_cache_pair("write_kv_cache", k_cache, v_cache)
    n = k.shape[0]
    if k.shape != v.shape or k.dim() != 3 or k.shape[1:] != k_cache.shape[2:]:
        raise ValueError(
            f"write_kv_cache: k and v must be [N, Hkv, D] = [N, {k_cache.shape[2]}, {k_cache.shape[3]}] to match the "
            f"cache, got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    if slot_mapping.dim() != 1 or slot_mapping.numel() != n or slot_mapping.dtype != torch.int64:
        raise ValueError(
            f"write_kv_cache: slot_mapping must be int64 [N={n}], got {slot_mapping.dtype} {tuple(slot_mapping.shape)}"
        )


def write_kv_cache_reference(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """k/v [N, Hkv, D] -> rows `slot_mapping` [N] of the caches, in place, cast to the cache dtype; slots < 0 skip."""
    _check_write_kv_cache(k, v, k_cache, v_cache, slot_mapping)
    n = k.shape[0]
    if n == 0:
        return
    flat_k = k_cache.view(-1, *k_cache.shape[2:])  # [num_blocks * block_size, Hkv, D]
    flat_v = v_cache.view(-1, *v_cache.shape[2:])
    k, v = k.to(k_cache.dtype), v.to(v_cache.dtype)
    keep = slot_mapping >= 0  # [N]
    # On CPU reading a flag costs nothing, and the engine never skips a slot: write straight through.
    if slot_mapping.device.type != "cpu" or not bool(keep.all()):
        slot_mapping, k, v = _redirect_skipped(flat_k, flat_v, keep, slot_mapping, k, v)
    flat_k.index_copy_(0, slot_mapping, k)
    flat_v.index_copy_(0, slot_mapping, v)


def _redirect_skipped(
    flat_k: torch.Tensor,
    flat_v: torch.Tensor,
    keep: torch.Tensor,
    slot_mapping: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slots and rows [N] to write with every skipped row made harmless, without a host sync (a boolean selection
    would need one to size its result): a skipped row repeats the first kept row's write (same slot, same values, so
    the repeated index is benign); when no row is kept, every row rewrites flat slot 0 with what it holds."""
    rows = torch.arange(keep.shape[0], device=keep.device)
    first_kept = keep.to(torch.int32).argmax()  # the first True; 0 when none is kept
    source = torch.where(keep, rows, first_kept)  # [N]
    slots = slot_mapping[source].clamp(min=0)  # only slot 0 when nothing is kept
    any_kept = keep.any()
    k = torch.where(any_kept, k[source], flat_k[slots])
    v = torch.where(any_kept, v[source], flat_v[slots])
    return slots, k, v


def copy_blocks_reference(
    k_caches: list[torch.Tensor],
    v_caches: list[torch.Tensor],
    src: torch.Tensor,
    dst: torch.Tensor,
) -> None:
    """For every layer's pair, block dst[i] := block src[i] (whole blocks), in place.

    All layers at once because a copy-on-write of a shared tail block must happen in every layer. Every block is read
    before any is written, so src and dst may overlap; dst must not repeat (the result would depend on order).
    """
    if len(k_caches) != len(v_caches):
        raise ValueError(f"copy_blocks: {len(k_caches)} k caches but {len(v_caches)} v caches; give one pair per layer")
    if src.dim() != 1 or src.shape != dst.shape or src.dtype != torch.int64 or dst.dtype != torch.int64:
        raise ValueError(
            f"copy_blocks: src and dst must be int64 [M] of equal length, got {src.dtype} {tuple(src.shape)} and "
            f"{dst.dtype} {tuple(dst.shape)}"
        )
    if dst.numel() == 0:
        return
    if torch.unique(dst).numel() != dst.numel():
        raise ValueError(f"copy_blocks: dst must not repeat a block, got {dst.tolist()}")
    for k_cache, v_cache in zip(k_caches, v_caches, strict=True):
        _check_cache_pair("copy_blocks", k_cache, v_cache)
        k_cache.index_copy_(0, dst, k_cache.index_select(0, src))  # [M, block_size, Hkv, D] read, then written
        v_cache.index_copy_(0, dst, v_cache.index_select(0, src))


write_kv_cache = define_op("write_kv_cache", write_kv_cache_reference)
copy_blocks = define_op("copy_blocks", copy_blocks_reference)


# --- cpp and cuda backends of write_kv_cache (csrc/cpu/kv_cache.cpp, csrc/cuda/kv_cache*.{cu,cpp}):
# `torch.ops.tao_engine.write_kv_cache`, in place, with a fake kernel (below). The extension loads in the probe, on
# first use, never at import time. Shape errors are the kernel's, with the reference's messages (ValueError);
# `supports` refuses only what it cannot run. On CUDA slot values are asserted on the device (a host check would cost
# a sync per step).
from tao_engine.ops.extension import cpu_backend_probe, cuda_backend_probe  # noqa: E402


def _write_kv_cache_compiled(a: Any) -> None:
    torch.ops.tao_engine.write_kv_cache(*a)


def _one_cache_dtype(a: Any) -> tuple[bool, str]:
    if a.v_cache.dtype != a.k_cache.dtype:
        return False, f"k_cache and v_cache must share one dtype, got {a.k_cache.dtype} and {a.v_cache.dtype}"
    return True, ""


def _write_kv_cache_compiled_supports(a: Any, device_type: str) -> tuple[bool, str]:
    device = a.k_cache.device
    if any(t.device != device for t in a) or device.type != device_type:
        where = "on the CPU" if device_type == "cpu" else "on one CUDA device"
        return False, f"every tensor must be {where}, got {[str(t.device) for t in a]}"
    ok, why = _one_cache_dtype(a)
    if ok and not (a.k_cache.is_contiguous() and a.v_cache.is_contiguous()):
        return False, "k_cache and v_cache must be contiguous (allocate them with allocate_kv_caches)"
    return ok, why


write_kv_cache.register(
    "cpp", _write_kv_cache_compiled, cpu_backend_probe, lambda a: _write_kv_cache_compiled_supports(a, "cpu")
)
write_kv_cache.register(
    "cuda", _write_kv_cache_compiled, cuda_backend_probe, lambda a: _write_kv_cache_compiled_supports(a, "cuda")
)


# --- triton backend of write_kv_cache (kernels/kv_cache.py); the kernel module is imported on first call, never at
# import time. Shape errors are the reference's (ValueError); `supports` refuses only what the kernel cannot run.
from tao_engine.ops import triton_support  # noqa: E402

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _write_kv_cache_triton(a: Any) -> None:
    _check_write_kv_cache(*a)
    triton_support.kernel_module("kv_cache").write_kv_cache(*a)


def _write_kv_cache_triton_supports(a: Any) -> tuple[bool, str]:
    ok, why = triton_support.device_supported(*a)
    for name, t in zip(a._fields[:4], a[:4], strict=True):  # k, v, k_cache, v_cache
        if not ok:
            break
        ok, why = triton_support.dtype_supported(name, t, _TRITON_DTYPES)
    return _one_cache_dtype(a) if ok else (ok, why)


write_kv_cache.register(
    "triton", _write_kv_cache_triton, triton_support.triton_probe, _write_kv_cache_triton_supports
)


# Inference only: a fake kernel, no autograd formula. Applied when `_C` loads (ops/extension.py).
def _write_kv_cache_fake(k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, slot_mapping: Tensor) -> None:
    torch._check_value(
        k.dim() == 3 and k_cache.dim() == 4 and k.shape[1:] == k_cache.shape[2:],
        lambda: f"write_kv_cache: k must be [N, Hkv, D] to match the cache, got {tuple(k.shape)} and "
        f"{tuple(k_cache.shape)}",
    )


write_kv_cache.register_compiled("tao_engine::write_kv_cache", _write_kv_cache_fake)
