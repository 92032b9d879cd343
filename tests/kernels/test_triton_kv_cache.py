"""The `triton` backend of write_kv_cache (kernels/kv_cache.py) against the torch reference and an fp64 evaluation of
the write (a cast of the fp64 values into the cache dtype): odd shapes, dtype casts, skipped and strided rows, and bad
input."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.kv_cache import write_kv_cache_reference
from tao_engine.ops.registry import BackendUnavailableError

pytestmark = pytest.mark.triton

SENTINEL = 7.0  # initial value of every cache entry: a slot written by mistake no longer holds it


def _caches(num_blocks, block_size, hkv, d, dtype, device):
    shape = (num_blocks, block_size, hkv, d)
    return (
        torch.full(shape, SENTINEL, dtype=dtype, device=device),
        torch.full(shape, -SENTINEL, dtype=dtype, device=device),
    )


def _rows(n, hkv, d, dtype, device, seed):
    gen = torch.Generator().manual_seed(seed)
    k = (torch.randn(n, hkv, d, generator=gen, dtype=torch.float64) * 3).to(dtype).to(device)
    v = (torch.randn(n, hkv, d, generator=gen, dtype=torch.float64) * 3).to(dtype).to(device)
    return k, v


def _slots(n, num_slots, seed, device, skipped=()):
    gen = torch.Generator().manual_seed(seed)
    slots = torch.randperm(num_slots, generator=gen)[:n]
    slots[list(skipped)] = -1
    return slots.to(device)


def _expected64(k, v, k_cache, v_cache, slots):
    # The fp64 specification: every kept row's fp64 value rounded once into the cache dtype, every other slot untouched.
    exp_k, exp_v = k_cache.clone(), v_cache.clone()
    hkv, d = k_cache.shape[2:]
    for i, slot in enumerate(slots.tolist()):
        if slot >= 0:
            exp_k.view(-1, hkv, d)[slot] = k[i].double().to(k_cache.dtype)
            exp_v.view(-1, hkv, d)[slot] = v[i].double().to(v_cache.dtype)
    return exp_k, exp_v


@pytest.mark.parametrize(("k_dtype", "cache_dtype"), [
    (torch.float32, torch.float32), (torch.float32, torch.bfloat16), (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.bfloat16), (torch.float32, torch.float16),
])  # fmt: skip
@pytest.mark.parametrize(("n", "block_size", "hkv", "d"), [(1, 4, 2, 16), (7, 16, 1, 32), (17, 4, 3, 24)])
def test_matches_reference_exactly(triton_device, n, block_size, hkv, d, k_dtype, cache_dtype):
    num_blocks = -(-n // block_size) + 2
    k, v = _rows(n, hkv, d, k_dtype, triton_device, seed=n * 100 + d)
    k_cache, v_cache = _caches(num_blocks, block_size, hkv, d, cache_dtype, triton_device)
    slots = _slots(n, num_blocks * block_size, seed=n, device=triton_device, skipped=(0,) if n > 1 else ())
    exp_k, exp_v = _expected64(k, v, k_cache, v_cache, slots)
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    write_kv_cache_reference(k, v, ref_k, ref_v, slots)
    assert ops.write_kv_cache(k, v, k_cache, v_cache, slots, backend="triton") is None
    assert torch.equal(k_cache, exp_k) and torch.equal(v_cache, exp_v)
    assert torch.equal(k_cache, ref_k) and torch.equal(v_cache, ref_v)
    # Untouched slots keep their sentinel: as many changed rows as kept slots.
    changed = (k_cache.view(-1, hkv, d) != SENTINEL).any(-1).any(-1).sum().item()
    assert changed == int((slots >= 0).sum())


def test_strided_k_and_v(triton_device):
    # k and v as slices of a fused [N, 3 * Hkv, D] qkv projection: non-contiguous rows, written without a copy.
    gen = torch.Generator().manual_seed(3)
    qkv = torch.randn(5, 3 * 2, 16, generator=gen).to(triton_device)
    k, v = qkv[:, 2:4], qkv[:, 4:6].transpose(1, 2).contiguous().transpose(1, 2)
    assert not k.is_contiguous() and not v.is_contiguous()
    k_cache, v_cache = _caches(3, 4, 2, 16, torch.bfloat16, triton_device)
    slots = torch.tensor([3, -5, 0, 11, 6], device=triton_device)
    exp_k, exp_v = _expected64(k, v, k_cache, v_cache, slots)
    ops.write_kv_cache(k, v, k_cache, v_cache, slots, backend="triton")
    assert torch.equal(k_cache, exp_k) and torch.equal(v_cache, exp_v)


def test_every_slot_skipped_and_empty_write_change_nothing(triton_device):
    k, v = _rows(3, 2, 16, torch.float32, triton_device, seed=1)
    k_cache, v_cache = _caches(2, 4, 2, 16, torch.float32, triton_device)
    ops.write_kv_cache(k, v, k_cache, v_cache, torch.full((3,), -1, device=triton_device), backend="triton")
    ops.write_kv_cache(k[:0], v[:0], k_cache, v_cache, torch.zeros(0, dtype=torch.int64), backend="triton")
    assert (k_cache == SENTINEL).all() and (v_cache == -SENTINEL).all()


def test_slots_past_the_cache_are_skipped_not_written_out_of_bounds(triton_device):
    # The reference raises IndexError; a kernel cannot raise, so it leaves the out-of-range row out.
    k, v = _rows(2, 2, 16, torch.float32, triton_device, seed=2)
    storage = torch.full((3, 4, 2, 16), SENTINEL, device=triton_device)
    k_cache, v_cache = storage[:2], torch.full((2, 4, 2, 16), -SENTINEL, device=triton_device)
    ops.write_kv_cache(k, v, k_cache, v_cache, torch.tensor([8, 5], device=triton_device), backend="triton")
    assert torch.equal(k_cache.view(-1, 2, 16)[5], k[1]) and torch.equal(v_cache.view(-1, 2, 16)[5], v[1])
    assert (storage[2] == SENTINEL).all()  # slot 8 would be the first row past k_cache


def test_bad_shapes_raise_the_references_errors(triton_device):
    k, v = _rows(3, 2, 16, torch.float32, triton_device, seed=4)
    k_cache, v_cache = _caches(2, 4, 2, 16, torch.float32, triton_device)
    slots = torch.tensor([0, 1, 2], device=triton_device)
    cases = [
        ((k, v, k_cache, v_cache, slots.int()), "slot_mapping must be int64"),
        ((k, v, k_cache, v_cache, slots[:2]), "slot_mapping must be int64"),
        ((k, v[:, :1], k_cache, v_cache, slots), "k and v must be"),
        ((k[..., :8], v[..., :8], k_cache, v_cache, slots), "k and v must be"),
        ((k, v, k_cache, v_cache[:1], slots), "k_cache and v_cache must both be"),
        ((k, v, k_cache.transpose(0, 1).contiguous().transpose(0, 1), v_cache, slots), "must be contiguous"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            ops.write_kv_cache(*args, backend="triton")
    assert (k_cache == SENTINEL).all()


def test_supports_refuses_what_the_kernel_cannot_run(triton_device):
    k, v = _rows(3, 2, 16, torch.float32, triton_device, seed=5)
    k_cache, v_cache = _caches(2, 4, 2, 16, torch.float32, triton_device)
    slots = torch.tensor([0, 1, 2], device=triton_device)
    with pytest.raises(BackendUnavailableError, match="share one dtype"):
        ops.write_kv_cache(k, v, k_cache, v_cache.bfloat16(), slots, backend="triton")
    with pytest.raises(BackendUnavailableError, match="k has dtype torch.float64"):
        ops.write_kv_cache(k.double(), v, k_cache, v_cache, slots, backend="triton")
    with pytest.raises(BackendUnavailableError, match="k_cache has dtype torch.float64"):
        ops.write_kv_cache(k, v, k_cache.double(), v_cache.double(), slots, backend="triton")
