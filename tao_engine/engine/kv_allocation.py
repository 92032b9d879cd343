"""Sizing and allocating the paged KV cache: one (k_cache, v_cache) pair per layer, each
[num_blocks, block_size, num_kv_heads, head_dim] in the model dtype.

The number of blocks comes from a memory budget, given either in bytes or as a fraction of the memory free on the
device now (CUDA: `torch.cuda.mem_get_info`; CPU: `MemAvailable` of /proc/meminfo), so a caller sizes the cache after
the model's weights are loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tao_engine.models.config import ModelConfig

MEMINFO = Path("/proc/meminfo")


def kv_cache_bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes one block takes over all layers, K and V together."""
    _check_positive("block_size", block_size)
    assert config.num_key_value_heads is not None and config.head_dim is not None  # resolved by ModelConfig
    element = torch.empty((), dtype=dtype).element_size()
    per_layer = block_size * config.num_key_value_heads * config.head_dim * element
    return 2 * config.num_hidden_layers * per_layer


def num_blocks_for_budget(
    config: ModelConfig,
    block_size: int,
    dtype: torch.dtype,
    budget_bytes: int | None = None,
    memory_fraction: float | None = None,
    device: torch.device | str = "cpu",
) -> int:
    """How many blocks fit in `budget_bytes`, or in `memory_fraction` of the memory now free on `device`."""
    if (budget_bytes is None) == (memory_fraction is None):
        raise ValueError(
            "num_blocks_for_budget: give exactly one of budget_bytes (bytes for the KV cache) or memory_fraction "
            f"(share of the free device memory), got budget_bytes={budget_bytes}, memory_fraction={memory_fraction}"
        )
    if memory_fraction is not None:
        if isinstance(memory_fraction, bool) or not 0 < memory_fraction <= 1:
            raise ValueError(f"num_blocks_for_budget: memory_fraction must be in (0, 1], got {memory_fraction!r}")
        free = available_memory_bytes(device)
        budget_bytes = int(free * memory_fraction)
        source = f"{memory_fraction} of the {free} bytes free on {torch.device(device)}"
    else:
        assert budget_bytes is not None
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 0:
            raise ValueError(f"num_blocks_for_budget: budget_bytes must be an int >= 0, got {budget_bytes!r}")
        source = "budget_bytes"
    per_block = kv_cache_bytes_per_block(config, block_size, dtype)
    num_blocks = budget_bytes // per_block
    if num_blocks < 1:
        raise ValueError(
            f"num_blocks_for_budget: the KV cache budget of {budget_bytes} bytes ({source}) cannot hold one block of "
            f"{per_block} bytes (block_size={block_size}, {config.num_hidden_layers} layers, {dtype}); raise the "
            "budget or lower block_size"
        )
    return num_blocks


def allocate_kv_caches(
    config: ModelConfig,
    num_blocks: int,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One uninitialised (k_cache, v_cache) pair per layer; nothing is read before a write_kv_cache fills it."""
    _check_positive("num_blocks", num_blocks)
    _check_positive("block_size", block_size)
    assert config.num_key_value_heads is not None and config.head_dim is not None
    shape = (num_blocks, block_size, config.num_key_value_heads, config.head_dim)
    return [
        # Zeros, not empty: attention reads whole blocks and masks past each context, and a masked NaN from
        # uninitialised memory would still poison the softmax-weighted sum (0 * NaN = NaN).
        (torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
        for _ in range(config.num_hidden_layers)
    ]


def available_memory_bytes(device: torch.device | str) -> int:
    """Memory free for new allocations on `device` now."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            text = MEMINFO.read_text()
        except OSError as err:
            raise RuntimeError(
                f"cannot read {MEMINFO} to size the KV cache ({err}); pass budget_bytes instead of memory_fraction"
            ) from err
        return mem_available_from_meminfo(text)
    raise ValueError(f"available_memory_bytes: device type {device.type!r} is not supported; pass budget_bytes")


def mem_available_from_meminfo(text: str) -> int:
    """Bytes of the `MemAvailable:  N kB` line of a /proc/meminfo text."""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            fields = line.split()
            if len(fields) == 3 and fields[1].isdigit() and fields[2] == "kB":
                return int(fields[1]) * 1024
            break
    raise RuntimeError(f"{MEMINFO} has no 'MemAvailable: N kB' line; pass budget_bytes instead of memory_fraction")


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"KV cache: {name} must be a positive int, got {value!r}")
