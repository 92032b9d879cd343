"""`EngineConfig`: how the engine sizes its KV cache and batches its work."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tao_engine.config_checks import check_positive_ints
from tao_engine.config_dict import dataclass_from_dict

_DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16  # tokens per KV block
    # KV budget: bytes, or a fraction of the memory available now (free GPU memory / MemAvailable on CPU).
    # Neither given: 25% of free GPU memory on CUDA; on CPU 2 GiB, capped at 25% of available RAM. Never more blocks
    # than max_num_seqs full-length sequences can use.
    kv_cache_bytes: int | None = None
    kv_cache_memory_fraction: float | None = None  # the KV budget as a fraction of the memory available now
    max_num_seqs: int = 64  # sequences holding KV at once
    max_num_batched_tokens: int = 2048  # tokens in one forward (prefill chunks are cut to fit)
    max_model_len: int | None = None  # prompt + output; default: the model's max_position_embeddings
    enable_prefix_caching: bool = True  # reuse the KV blocks of a prompt prefix computed before
    enable_chunked_prefill: bool = True  # split a long prefill into chunks that fit max_num_batched_tokens
    # weights/KV dtype when loading from a path; None: float32; "auto": bf16 where the device computes it natively
    # (tao_engine.precision), else float32. A module passed in keeps its own.
    dtype: str | None = None
    device: str = "cpu"  # where a model loaded from a path goes (a module stays where it is)
    seed: int = 0  # the engine's generator, which draws a seed for each request that gives none
    sampler_backend: str | None = None  # backend of ops.sample; None: automatic
    # torch.compile (inductor, dynamic batch) of the model's decode forward on the modules' own weights (it turns
    # pack_linears' automatic choice off); prefill stays eager. Measured on a 2-core AVX2 CPU: ~11% less CPU time per
    # batch-64 SmolLM2 decode step than the unpacked eager engine, after ~1-2 minutes of compiling per process; on an
    # AMX Xeon the packed eager engine is faster than it (783 vs 593 tok/s in one run).
    compile_decode: bool = False
    # A second copy of the linear weights, q|k|v and gate|up joined and prepacked for oneDNN, packed again whenever
    # the module's weights change (tao_engine/models/packed_weights.py); decode steps then run each layer as one C++
    # op (ops.decode_layer). None: wherever it can (bf16 or fp32 weights on CPU, eager decode; on an AMX Xeon
    # SmolLM2's batch-64 decode step ran 1.35x faster in bf16, 1.19x in fp32) and the copy takes at most half of the
    # memory left after the KV cache; True: always, or an error saying why it cannot; False: never (saves the copy:
    # the size of the model's linear weights).
    pack_linears: bool | None = None

    def __post_init__(self) -> None:
        check_positive_ints(self, ("block_size", "max_num_seqs", "max_num_batched_tokens"))
        if self.kv_cache_bytes is not None and self.kv_cache_memory_fraction is not None:
            raise ValueError("EngineConfig: give kv_cache_bytes or kv_cache_memory_fraction, not both")
        if self.kv_cache_bytes is not None and (not isinstance(self.kv_cache_bytes, int) or self.kv_cache_bytes < 1):
            raise ValueError(f"EngineConfig.kv_cache_bytes must be a positive int, got {self.kv_cache_bytes!r}")
        fraction = self.kv_cache_memory_fraction
        if fraction is not None and not 0 < fraction <= 0.95:
            raise ValueError(f"EngineConfig.kv_cache_memory_fraction must be in (0, 0.95], got {fraction!r}")
        if self.max_model_len is not None and (not isinstance(self.max_model_len, int) or self.max_model_len < 1):
            raise ValueError(f"EngineConfig.max_model_len must be an int >= 1 or None, got {self.max_model_len!r}")
        if not isinstance(self.compile_decode, bool):
            raise ValueError(f"EngineConfig.compile_decode must be true or false, got {self.compile_decode!r}")
        if self.pack_linears is not None and not isinstance(self.pack_linears, bool):
            raise ValueError(f"EngineConfig.pack_linears must be true, false or None (automatic), got "
                             f"{self.pack_linears!r}")
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"EngineConfig.dtype must be one of {_DTYPES} or None, got {self.dtype!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EngineConfig:
        return dataclass_from_dict(cls, d)
