"""write_kv_cache and copy_blocks (torch backend): exact slot writes, skipped slots, dtype cast, whole-block copies."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops

NUM_BLOCKS, BLOCK_SIZE, HKV, D = 7, 4, 2, 8


def caches(dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (NUM_BLOCKS, BLOCK_SIZE, HKV, D)
    return torch.randn(shape, generator=gen).to(dtype), torch.randn(shape, generator=gen).to(dtype)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_write_puts_each_token_in_its_slot_and_skips_negative_slots(cache_dtype):
    k_cache, v_cache = caches(cache_dtype)
    before_k, before_v = k_cache.clone(), v_cache.clone()
    gen = torch.Generator().manual_seed(1)
    slots = torch.tensor([13, -1, 0, 27, 5, -1, 22], dtype=torch.int64)  # odd count, out of order, two skipped
    k = torch.randn(7, HKV, 2 * D, generator=gen)[..., :D]  # fp32 and non-contiguous
    v = torch.randn(7, HKV, D, generator=gen)
    ops.write_kv_cache(k, v, k_cache, v_cache, slots, backend="torch")

    flat_k, flat_v = k_cache.view(-1, HKV, D), v_cache.view(-1, HKV, D)
    written = slots >= 0
    assert torch.equal(flat_k[slots[written]], k[written].to(cache_dtype))
    assert torch.equal(flat_v[slots[written]], v[written].to(cache_dtype))
    untouched = torch.ones(NUM_BLOCKS * BLOCK_SIZE, dtype=torch.bool)
    untouched[slots[written]] = False
    assert torch.equal(flat_k[untouched], before_k.view(-1, HKV, D)[untouched])
    assert torch.equal(flat_v[untouched], before_v.view(-1, HKV, D)[untouched])
    assert k_cache.dtype == cache_dtype


def test_write_with_every_slot_skipped_changes_nothing():
    k_cache, v_cache = caches()
    before = k_cache.clone()
    k = torch.randn(3, HKV, D)
    ops.write_kv_cache(k, k, k_cache, v_cache, torch.full((3,), -1, dtype=torch.int64), backend="torch")
    assert torch.equal(k_cache, before)


def test_write_rejects_bad_inputs():
    k_cache, v_cache = caches()
    k = torch.randn(3, HKV, D)
    with pytest.raises(ValueError, match="slot_mapping must be int64"):
        ops.write_kv_cache(k, k, k_cache, v_cache, torch.tensor([0, 1, 2], dtype=torch.int32), backend="torch")
    with pytest.raises(ValueError, match="k and v must be"):
        ops.write_kv_cache(k[:, :1], k[:, :1], k_cache, v_cache, torch.arange(3), backend="torch")
    with pytest.raises(ValueError, match="contiguous"):
        ops.write_kv_cache(k, k, k_cache.transpose(0, 1), v_cache.transpose(0, 1), torch.arange(3), backend="torch")


def test_copy_blocks_copies_whole_blocks_in_every_layer():
    layers = [caches(seed=s) for s in range(3)]
    before = [(k.clone(), v.clone()) for k, v in layers]
    # 1 -> 4 and a swap of 2 and 5 (overlapping src and dst: every block is read before any is written)
    src = torch.tensor([1, 2, 5])
    dst = torch.tensor([4, 5, 2])
    ops.copy_blocks([k for k, _ in layers], [v for _, v in layers], src, dst, backend="torch")
    for (k, v), (k0, v0) in zip(layers, before, strict=True):
        for s, d in zip(src.tolist(), dst.tolist(), strict=True):
            assert torch.equal(k[d], k0[s]) and torch.equal(v[d], v0[s])
        for other in (0, 1, 3, 6):
            assert torch.equal(k[other], k0[other]) and torch.equal(v[other], v0[other])


def test_copy_blocks_rejects_bad_inputs():
    k, v = caches()
    with pytest.raises(ValueError, match="must not repeat"):
        ops.copy_blocks([k], [v], torch.tensor([0, 1]), torch.tensor([3, 3]), backend="torch")
    with pytest.raises(ValueError, match="one pair per layer"):
        ops.copy_blocks([k, k], [v], torch.tensor([0]), torch.tensor([3]), backend="torch")
    with pytest.raises(ValueError, match="int64"):
        ops.copy_blocks([k], [v], torch.tensor([0], dtype=torch.int32), torch.tensor([3]), backend="torch")
