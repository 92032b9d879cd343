"""write_kv_cache on every backend (torch reference, `cpp` csrc/cpu/kv_cache.cpp, `triton` kernels/kv_cache.py)
against an fp64 evaluation of the write (each kept row's fp64 value cast once into the cache dtype) and the reference,
bit for bit: odd shapes, dtype casts, skipped, strided and many rows, bad input; copy_blocks (torch): whole-block
copies in every layer; opcheck of the compiled op."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.extension import load_extension
from tao_engine.ops.kv_cache import write_kv_cache_reference
from tao_engine.ops.registry import BackendUnavailableError, all_ops
from tests.ops.conftest import backends

BACKENDS = backends("torch", "cpp", "triton")
SENTINEL = 7.0  # initial value of every cache entry: a slot written by mistake no longer holds it


def _caches(num_blocks, block_size, hkv, d, dtype, device="cpu"):
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


def _write_and_check(k, v, k_cache, v_cache, slots, backend):
    """Writes with `backend` and asserts the result equals both the fp64 specification and the reference."""
    exp_k, exp_v = _expected64(k, v, k_cache, v_cache, slots)
    ref_k, ref_v = k_cache.clone(), v_cache.clone()
    write_kv_cache_reference(k, v, ref_k, ref_v, slots)
    assert ops.write_kv_cache(k, v, k_cache, v_cache, slots, backend=backend) is None
    assert torch.equal(k_cache, exp_k) and torch.equal(v_cache, exp_v)
    assert torch.equal(k_cache, ref_k) and torch.equal(v_cache, ref_v)


DTYPES = [  # (k / v dtype, cache dtype)
    (torch.float32, torch.float32), (torch.float32, torch.bfloat16), (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.bfloat16), (torch.float32, torch.float16), (torch.bfloat16, torch.float32),
    (torch.bfloat16, torch.float16),
]  # fmt: skip
SHAPES = [(1, 4, 2, 16), (7, 16, 1, 32), (17, 4, 3, 24), (7, 8, 3, 32)]  # (n, block_size, hkv, d)


@pytest.mark.parametrize(("k_dtype", "cache_dtype"), DTYPES)
@pytest.mark.parametrize(("n", "block_size", "hkv", "d"), SHAPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_reference_exactly(backend, device, n, block_size, hkv, d, k_dtype, cache_dtype):
    num_blocks = -(-n // block_size) + 2
    k, v = _rows(n, hkv, d, k_dtype, device, seed=n * 100 + d)
    k_cache, v_cache = _caches(num_blocks, block_size, hkv, d, cache_dtype, device)
    slots = _slots(n, num_blocks * block_size, seed=n, device=device, skipped=(0,) if n > 1 else ())
    _write_and_check(k, v, k_cache, v_cache, slots, backend)
    assert k_cache.dtype == cache_dtype
    # Untouched slots keep their sentinel: as many changed rows as kept slots.
    changed = (k_cache.view(-1, hkv, d) != SENTINEL).any(-1).any(-1).sum().item()
    assert changed == int((slots >= 0).sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_k_and_v(backend, device):
    # k and v as slices of a fused [N, 3 * Hkv, D] qkv projection: non-contiguous rows, written without a copy.
    gen = torch.Generator().manual_seed(3)
    qkv = torch.randn(5, 3 * 2, 16, generator=gen).to(device)
    k, v = qkv[:, 2:4], qkv[:, 4:6].transpose(1, 2).contiguous().transpose(1, 2)
    assert not k.is_contiguous() and not v.is_contiguous()
    k_cache, v_cache = _caches(3, 4, 2, 16, torch.bfloat16, device)
    _write_and_check(k, v, k_cache, v_cache, torch.tensor([3, -5, 0, 11, 6], device=device), backend)
    # rows whose last dimension is a slice of a wider one
    k, v = (torch.randn(5, 2, 32, generator=gen)[..., :16].to(device) for _ in range(2))
    k_cache, v_cache = _caches(3, 4, 2, 16, torch.float32, device)
    _write_and_check(k, v, k_cache, v_cache, torch.tensor([10, 2, 3, -1, 9], device=device), backend)


@pytest.mark.parametrize("backend", backends("torch", "cpp"))
def test_many_rows_split_over_threads(backend):
    num_blocks, block_size = 600, 8
    k_cache, v_cache = _caches(num_blocks, block_size, 3, 32, torch.bfloat16)
    n = 4099
    slots = _slots(n, num_blocks * block_size, seed=6, device="cpu", skipped=range(0, n, 97))
    k, v = _rows(n, 3, 32, torch.bfloat16, "cpu", seed=6)
    _write_and_check(k, v, k_cache, v_cache, slots, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_slot_skipped_and_empty_write_change_nothing(backend, device):
    k, v = _rows(3, 2, 16, torch.float32, device, seed=1)
    k_cache, v_cache = _caches(2, 4, 2, 16, torch.float32, device)
    ops.write_kv_cache(k, v, k_cache, v_cache, torch.full((3,), -1, device=device), backend=backend)
    ops.write_kv_cache(k[:0], v[:0], k_cache, v_cache, torch.zeros(0, dtype=torch.int64, device=device),
                       backend=backend)
    assert (k_cache == SENTINEL).all() and (v_cache == -SENTINEL).all()


@pytest.mark.parametrize("backend", backends("triton"))
def test_slots_past_the_cache_are_skipped_not_written_out_of_bounds(backend, device):
    # The reference raises IndexError; a kernel cannot raise, so it leaves the out-of-range row out.
    k, v = _rows(2, 2, 16, torch.float32, device, seed=2)
    storage = torch.full((3, 4, 2, 16), SENTINEL, device=device)
    k_cache, v_cache = storage[:2], torch.full((2, 4, 2, 16), -SENTINEL, device=device)
    ops.write_kv_cache(k, v, k_cache, v_cache, torch.tensor([8, 5], device=device), backend=backend)
    assert torch.equal(k_cache.view(-1, 2, 16)[5], k[1]) and torch.equal(v_cache.view(-1, 2, 16)[5], v[1])
    assert (storage[2] == SENTINEL).all()  # slot 8 would be the first row past k_cache


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_shapes_raise_the_references_errors(backend, device):
    k, v = _rows(3, 2, 16, torch.float32, device, seed=4)
    k_cache, v_cache = _caches(2, 4, 2, 16, torch.float32, device)
    slots = torch.tensor([0, 1, 2], device=device)
    cases = [
        ((k, v, k_cache, v_cache, slots.int()), "slot_mapping must be int64"),
        ((k, v, k_cache, v_cache, slots[:2]), "slot_mapping must be int64"),
        ((k, v[:, :1], k_cache, v_cache, slots), "k and v must be"),
        ((k[:, :1], v[:, :1], k_cache, v_cache, slots), "k and v must be"),
        ((k[..., :8], v[..., :8], k_cache, v_cache, slots), "k and v must be"),
        ((k, v, k_cache, v_cache[:1], slots), "k_cache and v_cache must both be"),
    ]
    if backend != "cpp":  # cpp's supports refuses a strided cache first (test_compiled_op_bad_values_and_refusals)
        strided = k_cache.transpose(0, 1).contiguous().transpose(0, 1)
        cases.append(((k, v, strided, v_cache, slots), "must be contiguous"))
        cases.append(((k, v, k_cache.transpose(0, 1), v_cache.transpose(0, 1), slots), "contiguous"))
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            ops.write_kv_cache(*args, backend=backend)
    assert (k_cache == SENTINEL).all()


@pytest.mark.parametrize("backend", backends("cpp", "triton"))
def test_supports_refuses_mixed_cache_dtypes(backend, device):
    k, v = _rows(3, 2, 16, torch.float32, device, seed=5)
    k_cache, v_cache = _caches(2, 4, 2, 16, torch.float32, device)
    with pytest.raises(BackendUnavailableError, match="share one dtype"):
        ops.write_kv_cache(k, v, k_cache, v_cache.bfloat16(), torch.tensor([0, 1, 2], device=device), backend=backend)


@pytest.mark.parametrize("backend", backends("triton"))
def test_triton_refuses_fp64(backend, device):
    k, v = _rows(3, 2, 16, torch.float32, device, seed=5)
    k_cache, v_cache = _caches(2, 4, 2, 16, torch.float32, device)
    slots = torch.tensor([0, 1, 2], device=device)
    with pytest.raises(BackendUnavailableError, match="k has dtype torch.float64"):
        ops.write_kv_cache(k.double(), v, k_cache, v_cache, slots, backend=backend)
    with pytest.raises(BackendUnavailableError, match="k_cache has dtype torch.float64"):
        ops.write_kv_cache(k, v, k_cache.double(), v_cache.double(), slots, backend=backend)


@pytest.mark.ext
def test_opcheck():
    load_extension()
    k_cache, v_cache = _caches(9, 8, 3, 32, torch.float32)
    k, v = _rows(4, 3, 32, torch.float32, "cpu", seed=8)
    slots = torch.tensor([3, -1, 40, 7], dtype=torch.int64)
    torch.library.opcheck(torch.ops.tao_engine.write_kv_cache.default, (k, v, k_cache, v_cache, slots))


@pytest.mark.ext
def test_compiled_op_bad_values_and_refusals():
    op = torch.ops.tao_engine.write_kv_cache
    load_extension()
    k_cache, v_cache = _caches(9, 8, 3, 32, torch.float32)
    k = torch.randn(3, 3, 32)
    slots = torch.tensor([1, 9 * 8, 2], dtype=torch.int64)
    with pytest.raises(IndexError, match=r"slot_mapping\[1\] = 72 is out of range for a cache of 72 slots"):
        op(k, k, k_cache, v_cache, slots)
    assert (k_cache == SENTINEL).all(), "a rejected call must write nothing"
    with pytest.raises(ValueError, match="contiguous"):
        op(k, k, k_cache.transpose(0, 1), v_cache.transpose(0, 1), torch.arange(3))
    with pytest.raises(BackendUnavailableError, match="contiguous"):
        ops.write_kv_cache(k, k, k_cache.transpose(0, 1), v_cache.transpose(0, 1), torch.arange(3), backend="cpp")
    assert all_ops()["write_kv_cache"].describe("cpu") == "cpp"


def _random_caches(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(7, 4, 2, 8, generator=gen), torch.randn(7, 4, 2, 8, generator=gen)


def test_copy_blocks_copies_whole_blocks_in_every_layer():
    layers = [_random_caches(seed=s) for s in range(3)]
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
    k, v = _random_caches(seed=0)
    with pytest.raises(ValueError, match="must not repeat"):
        ops.copy_blocks([k], [v], torch.tensor([0, 1]), torch.tensor([3, 3]), backend="torch")
    with pytest.raises(ValueError, match="one pair per layer"):
        ops.copy_blocks([k, k], [v], torch.tensor([0]), torch.tensor([3]), backend="torch")
    with pytest.raises(ValueError, match="int64"):
        ops.copy_blocks([k], [v], torch.tensor([0], dtype=torch.int32), torch.tensor([3]), backend="torch")
