"""The KV cache a TAO run needs, so that the engine does not take its all-purpose default.

The engine's default KV budget (2 GiB on CPU, a quarter of free memory on CUDA) is allocated, and touched, when the
engine is built: for SmolLM2-135M that is four times its weights, whatever the run generates. A TAO step generates
a known batch: `prompts_per_step` prompts, each forwarded once and forked into its candidates, each candidate at
most `max_tokens` long. When the user sets no budget ([engine] kv_cache_bytes and kv_cache_memory_fraction unset),
the run sizes the cache for that batch once its prompts are known: the longest prompt's blocks per group plus every
candidate's, never more than the engine's default. Larger work (the probe's or the eval's prompts all at once) then
runs in waves, which costs nothing on a CPU that is already busy with one step's batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from tao_engine.engine.config import EngineConfig
from tao_engine.engine.kv_allocation import kv_cache_bytes_per_block

EXPLORATION_PROMPT_MARGIN = 256  # tokens a reasoning or critique template adds around the prompt


def step_kv_blocks(config: Any, prompt_tokens: int, block_size: int) -> int:
    """Blocks that one step's batch holds at once: per prompt, its longest prompt once (the candidates share it) and
    each candidate's generated tokens (+1 block of slack each for the block being filled)."""
    exploration = config.exploration
    generated = max(config.sampling.max_tokens, exploration.max_tokens or 0)
    if exploration.strategy != "plain":  # exploration prompts carry a template, and refine a draft and a critique
        prompt_tokens += EXPLORATION_PROMPT_MARGIN + 2 * generated
    candidates = exploration.candidates_per_prompt(config.sampling.n)
    per_group = -(-prompt_tokens // block_size) + candidates * (-(-generated // block_size) + 1)
    return config.data.prompts_per_step * per_group + 1


def sized_engine_config(config: Any, model: Any, prompt_lengths: Iterable[int]) -> EngineConfig:
    """`config.engine` with `kv_cache_bytes` set for one step's batch (see the module docstring), or as it is when
    the user chose a budget."""
    engine = config.engine
    lengths = list(prompt_lengths)
    if engine.kv_cache_bytes is not None or engine.kv_cache_memory_fraction is not None or not lengths:
        return engine
    from tao_engine.engine.engine import DEFAULT_CPU_KV_BYTES

    weight = next(model.parameters())
    per_block = kv_cache_bytes_per_block(model.config, engine.block_size, weight.dtype)
    needed = step_kv_blocks(config, max(lengths), engine.block_size) * per_block
    if weight.device.type == "cpu":
        needed = min(needed, DEFAULT_CPU_KV_BYTES)
    return dataclasses.replace(engine, kv_cache_bytes=int(needed))


def prompt_lengths(records: Iterable[Any], tokenizer: Any) -> list[int]:
    """Token counts of the records' prompts as the engine will encode them; one that cannot be encoded is left out
    (the run's prompt check names it with its file:line)."""
    from tao_engine.engine.prompts import encode_prompt

    out = []
    for i, record in enumerate(records):
        try:
            out.append(len(encode_prompt(record.prompt, tokenizer, i)[1]))
        except ValueError:
            continue
    return out
