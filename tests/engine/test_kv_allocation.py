"""KV cache sizing from a memory budget and allocation of one (k, v) pair per layer."""

from __future__ import annotations

import pytest
import torch

from tao_engine.engine.kv_allocation import (
    allocate_kv_caches,
    available_memory_bytes,
    kv_cache_bytes_per_block,
    mem_available_from_meminfo,
    num_blocks_for_budget,
)
from tests import helpers

CONFIG = helpers.tiny_config(hidden_size=48, intermediate_size=64, num_hidden_layers=3, num_attention_heads=6,
                             num_key_value_heads=2)  # head_dim = 8


def test_bytes_per_block_counts_k_and_v_of_every_layer():
    assert kv_cache_bytes_per_block(CONFIG, 16, torch.bfloat16) == 2 * 3 * 16 * 2 * 8 * 2
    assert kv_cache_bytes_per_block(CONFIG, 1, torch.float32) == 2 * 3 * 1 * 2 * 8 * 4


def test_budget_in_bytes_gives_whole_blocks():
    per_block = kv_cache_bytes_per_block(CONFIG, 4, torch.float32)
    assert num_blocks_for_budget(CONFIG, 4, torch.float32, budget_bytes=10 * per_block + per_block - 1) == 10
    assert num_blocks_for_budget(CONFIG, 4, torch.float32, budget_bytes=per_block) == 1


def test_budget_too_small_or_ambiguous_is_a_clear_error():
    per_block = kv_cache_bytes_per_block(CONFIG, 4, torch.float32)
    with pytest.raises(ValueError, match="cannot hold one block"):
        num_blocks_for_budget(CONFIG, 4, torch.float32, budget_bytes=per_block - 1)
    with pytest.raises(ValueError, match="exactly one of"):
        num_blocks_for_budget(CONFIG, 4, torch.float32)
    with pytest.raises(ValueError, match="exactly one of"):
        num_blocks_for_budget(CONFIG, 4, torch.float32, budget_bytes=10**6, memory_fraction=0.5)
    with pytest.raises(ValueError, match="memory_fraction"):
        num_blocks_for_budget(CONFIG, 4, torch.float32, memory_fraction=1.5)
    with pytest.raises(ValueError, match="block_size"):
        num_blocks_for_budget(CONFIG, 0, torch.float32, budget_bytes=10**6)


def test_memory_fraction_of_free_cpu_memory():
    free = available_memory_bytes("cpu")
    assert free > 0
    blocks = num_blocks_for_budget(CONFIG, 16, torch.float32, memory_fraction=0.01, device="cpu")
    per_block = kv_cache_bytes_per_block(CONFIG, 16, torch.float32)
    # Free memory moves a little between the two reads; 1% of it must still be close to blocks * per_block.
    assert abs(blocks * per_block - 0.01 * free) < 0.001 * free + per_block


def test_meminfo_parsing():
    text = "MemTotal:       16000000 kB\nMemFree:         1000 kB\nMemAvailable:    8000000 kB\n"
    assert mem_available_from_meminfo(text) == 8000000 * 1024
    with pytest.raises(RuntimeError, match="MemAvailable"):
        mem_available_from_meminfo("MemTotal: 5 kB\n")


def test_allocate_gives_one_pair_per_layer_in_the_cache_layout():
    caches = allocate_kv_caches(CONFIG, num_blocks=5, block_size=4, dtype=torch.bfloat16, device="cpu")
    assert len(caches) == CONFIG.num_hidden_layers
    storages = set()
    for k, v in caches:
        for t in (k, v):
            assert t.shape == (5, 4, 2, 8) and t.dtype == torch.bfloat16 and t.is_contiguous()
            storages.add(t.untyped_storage().data_ptr())
    assert len(storages) == 2 * CONFIG.num_hidden_layers  # no two caches share memory
    with pytest.raises(ValueError, match="num_blocks"):
        allocate_kv_caches(CONFIG, num_blocks=0, block_size=4, dtype=torch.float32)
