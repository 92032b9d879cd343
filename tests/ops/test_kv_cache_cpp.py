"""The `cpp` backend of write_kv_cache (csrc/cpu/kv_cache.cpp) against the torch reference, which it must match
bit for bit: slot writes in place, skipped slots, dtype casts, strided k/v, many rows over threads, opcheck, bad
input."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.extension import extension_status, load_extension
from tao_engine.ops.registry import BackendUnavailableError, all_ops

pytestmark = pytest.mark.ext

NUM_BLOCKS, BLOCK_SIZE, HKV, D = 9, 8, 3, 32


@pytest.fixture(scope="module", autouse=True)
def _extension() -> None:
    loaded, why = extension_status()
    if not loaded:
        pytest.skip(f"tao_engine._C is not built: {why}")


def caches(dtype: torch.dtype, seed: int, num_blocks: int = NUM_BLOCKS) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (num_blocks, BLOCK_SIZE, HKV, D)
    return torch.randn(shape, generator=gen).to(dtype), torch.randn(shape, generator=gen).to(dtype)


def write_both_ways(k, v, k_cache, v_cache, slots):
    """Runs the reference and the cpp backend on copies of the caches; returns both results."""
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    ops.write_kv_cache(k, v, ref_k, ref_v, slots, backend="torch")
    cpp_k, cpp_v = k_cache.clone(), v_cache.clone()
    ops.write_kv_cache(k, v, cpp_k, cpp_v, slots, backend="cpp")
    return (ref_k, ref_v), (cpp_k, cpp_v)


@pytest.mark.parametrize("k_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_reference_exactly(cache_dtype, k_dtype):
    k_cache, v_cache = caches(cache_dtype, seed=1)
    gen = torch.Generator().manual_seed(2)
    slots = torch.tensor([13, -1, 0, 71, 5, -7, 22], dtype=torch.int64)  # odd count, out of order, two skipped
    k = torch.randn(7, HKV, D, generator=gen).to(k_dtype)
    v = torch.randn(7, HKV, D, generator=gen).to(k_dtype)
    (ref_k, ref_v), (cpp_k, cpp_v) = write_both_ways(k, v, k_cache, v_cache, slots)
    assert torch.equal(cpp_k, ref_k) and torch.equal(cpp_v, ref_v)
    assert cpp_k.dtype == cache_dtype
    assert not torch.equal(cpp_k, k_cache), "the write must change the cache"


def test_strided_k_and_v():
    k_cache, v_cache = caches(torch.float32, seed=3)
    gen = torch.Generator().manual_seed(4)
    qkv = torch.randn(5, 3 * HKV * D, generator=gen)  # a fused projection's output [N, (Hq + 2 Hkv) D]
    k = qkv[:, HKV * D : 2 * HKV * D].view(5, HKV, D)  # rows strided, each row contiguous: read in place
    v = torch.randn(5, HKV, 2 * D, generator=gen)[..., :D]  # rows not contiguous: copied first
    slots = torch.tensor([70, 2, 3, 40, 9], dtype=torch.int64)
    (ref_k, ref_v), (cpp_k, cpp_v) = write_both_ways(k, v, k_cache, v_cache, slots)
    assert torch.equal(cpp_k, ref_k) and torch.equal(cpp_v, ref_v)


def test_many_rows_split_over_threads():
    num_blocks = 600
    k_cache, v_cache = caches(torch.bfloat16, seed=5, num_blocks=num_blocks)
    gen = torch.Generator().manual_seed(6)
    n = 4099
    slots = torch.randperm(num_blocks * BLOCK_SIZE, generator=gen)[:n]
    slots[::97] = -1
    k = torch.randn(n, HKV, D, generator=gen).bfloat16()
    v = torch.randn(n, HKV, D, generator=gen).bfloat16()
    (ref_k, ref_v), (cpp_k, cpp_v) = write_both_ways(k, v, k_cache, v_cache, slots)
    assert torch.equal(cpp_k, ref_k) and torch.equal(cpp_v, ref_v)


def test_every_slot_skipped_and_empty_write_change_nothing():
    k_cache, v_cache = caches(torch.float32, seed=7)
    before_k, before_v = k_cache.clone(), v_cache.clone()
    k = torch.randn(3, HKV, D)
    ops.write_kv_cache(k, k, k_cache, v_cache, torch.full((3,), -1, dtype=torch.int64), backend="cpp")
    ops.write_kv_cache(k[:0], k[:0], k_cache, v_cache, torch.zeros(0, dtype=torch.int64), backend="cpp")
    assert torch.equal(k_cache, before_k) and torch.equal(v_cache, before_v)


def test_opcheck():
    load_extension()
    k_cache, v_cache = caches(torch.float32, seed=8)
    k, v = torch.randn(4, HKV, D), torch.randn(4, HKV, D)
    slots = torch.tensor([3, -1, 40, 7], dtype=torch.int64)
    torch.library.opcheck(torch.ops.tao_engine.write_kv_cache.default, (k, v, k_cache, v_cache, slots))


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_bad_shapes_raise_the_references_errors(backend):
    k_cache, v_cache = caches(torch.float32, seed=9)
    k = torch.randn(3, HKV, D)
    with pytest.raises(ValueError, match="slot_mapping must be int64"):
        ops.write_kv_cache(k, k, k_cache, v_cache, torch.tensor([0, 1, 2], dtype=torch.int32), backend=backend)
    with pytest.raises(ValueError, match="slot_mapping must be int64"):
        ops.write_kv_cache(k, k, k_cache, v_cache, torch.arange(2), backend=backend)
    with pytest.raises(ValueError, match="k and v must be"):
        ops.write_kv_cache(k[:, :1], k[:, :1], k_cache, v_cache, torch.arange(3), backend=backend)
    with pytest.raises(ValueError, match="k_cache and v_cache must both be"):
        ops.write_kv_cache(k, k, k_cache, v_cache[:2].clone(), torch.arange(3), backend=backend)


def test_bad_values_and_unsupported_calls():
    op = torch.ops.tao_engine.write_kv_cache
    load_extension()
    k_cache, v_cache = caches(torch.float32, seed=10)
    before = k_cache.clone()
    k = torch.randn(3, HKV, D)
    slots = torch.tensor([1, NUM_BLOCKS * BLOCK_SIZE, 2], dtype=torch.int64)
    with pytest.raises(IndexError, match=r"slot_mapping\[1\] = 72 is out of range for a cache of 72 slots"):
        op(k, k, k_cache, v_cache, slots)
    assert torch.equal(k_cache, before), "a rejected call must write nothing"
    with pytest.raises(ValueError, match="contiguous"):
        op(k, k, k_cache.transpose(0, 1), v_cache.transpose(0, 1), torch.arange(3))
    with pytest.raises(BackendUnavailableError, match="contiguous"):
        ops.write_kv_cache(k, k, k_cache.transpose(0, 1), v_cache.transpose(0, 1), torch.arange(3), backend="cpp")
    with pytest.raises(BackendUnavailableError, match="share one dtype"):
        ops.write_kv_cache(k, k, k_cache, v_cache.bfloat16(), torch.arange(3), backend="cpp")
    assert all_ops()["write_kv_cache"].describe("cpu") == "cpp"
