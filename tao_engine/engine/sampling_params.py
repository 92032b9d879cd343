"""How one request is sampled: `SamplingParams` (validated on construction) and the seeds its samples draw from.

Randomness never comes from a global generator. A request has one 64-bit seed: `params.seed` when given, otherwise
one the engine draws from its own `torch.Generator` with `resolve_seed` (so a seeded engine is reproducible too).
Sample i of the request then uses `sample_seed(request_seed, i)`, and the sampling op derives each step's draw from
(that seed, the step index) alone, so a sample's tokens do not depend on what else is in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from tao_engine.config_dict import dataclass_from_dict

_MIN_TEMPERATURE = 1e-3  # below this logits / T overflows fp32 for ordinary logits; 0 means greedy
_MAX_ABS_PENALTY = 2.0  # presence/frequency range of the OpenAI API and vLLM
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # samples per prompt (a group)
    temperature: float = 1.0  # 0 = greedy (argmax, lowest id on ties)
    top_k: int = 0  # keep the k most likely tokens; 0 or -1 = off
    top_p: float = 1.0  # nucleus: smallest set of top tokens with probability >= top_p; 1 = off
    min_p: float = 0.0  # keep tokens with p >= min_p * p_max; 0 = off
    repetition_penalty: float = 1.0  # logits of tokens seen in prompt or output: positive / r, negative * r
    presence_penalty: float = 0.0  # subtracted once from each token present in the output
    frequency_penalty: float = 0.0  # subtracted per occurrence in the output
    max_tokens: int = 16  # most tokens generated per sample
    min_tokens: int = 0  # EOS and stop_token_ids are blocked until this many tokens are generated
    stop: tuple[str, ...] = ()  # strings that end a sample
    stop_token_ids: tuple[int, ...] = ()  # token ids that end a sample, besides EOS
    ignore_eos: bool = False  # generate max_tokens whatever comes (benchmarks)
    seed: int | None = None  # None: the engine draws one per request from its own generator (`resolve_seed`)
    logprobs: bool = True  # return each generated token's log-prob (sampled and raw)
    skip_special_tokens: bool = True  # leave special tokens out of the returned text
    include_stop_str_in_output: bool = False  # keep the stop string that ended a sample in its text

    def __post_init__(self) -> None:
        for name in ("n", "top_k", "max_tokens", "min_tokens"):
            _check_int(name, getattr(self, name))
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"):
            object.__setattr__(self, name, _check_float(name, getattr(self, name)))
        for name in ("ignore_eos", "logprobs", "skip_special_tokens", "include_stop_str_in_output"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"SamplingParams.{name} must be a bool, got {getattr(self, name)!r}")

        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.temperature != 0.0 and self.temperature < _MIN_TEMPERATURE:
            raise ValueError(
                f"SamplingParams.temperature must be 0 (greedy) or >= {_MIN_TEMPERATURE}, got {self.temperature}"
            )
        if self.top_k < -1:
            raise ValueError(f"SamplingParams.top_k must be >= 1, or 0 / -1 to turn it off, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"SamplingParams.min_p must be in [0, 1] (0 = off), got {self.min_p}")
        if self.repetition_penalty <= 0.0:
            raise ValueError(f"SamplingParams.repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        for name in ("presence_penalty", "frequency_penalty"):
            if abs(getattr(self, name)) > _MAX_ABS_PENALTY:
                raise ValueError(
                    f"SamplingParams.{name} must be in [-{_MAX_ABS_PENALTY}, {_MAX_ABS_PENALTY}] (0 = off), "
                    f"got {getattr(self, name)}"
                )
        if self.max_tokens < 1:
            raise ValueError(f"SamplingParams.max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(
                f"SamplingParams.min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens}"
            )
        object.__setattr__(self, "stop", _normalize_stop(self.stop))
        object.__setattr__(self, "stop_token_ids", _normalize_stop_token_ids(self.stop_token_ids))
        if self.seed is not None:
            _check_int("seed", self.seed, limit=2**64)
            if not -(2**63) <= self.seed < 2**64:
                raise ValueError(f"SamplingParams.seed must fit in 64 bits, got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def uses_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SamplingParams:
        """Build from a mapping (a TOML table, a JSON request); unknown keys are an error that names them."""
        return dataclass_from_dict(cls, d)


def resolve_seed(params: SamplingParams, generator: torch.Generator) -> int:
    """The request's seed: `params.seed`, or (when None) a fresh one drawn from the engine's own generator."""
    if params.seed is not None:
        return params.seed
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def sample_seed(request_seed: int, index: int) -> int:
    """Seed of sample `index` of a request, as a signed int64 (what the sampling op takes).

    Mixed with splitmix64's finalizer so that (seed, index) pairs do not collide the way seed + index would.
    """
    if index < 0:
        raise ValueError(f"sample_seed: index must be >= 0, got {index}")
    mixed = _mix64((request_seed & _MASK64) ^ _mix64(index + 0x9E3779B97F4A7C15))
    return mixed - (1 << 64) if mixed >= 1 << 63 else mixed


def _mix64(x: int) -> int:
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _check_int(name: str, value: Any, limit: int = 2**63) -> None:
    """An int in [-limit, limit): the sampler's tensors are int64, and a bigger Python int must fail here, named."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"SamplingParams.{name} must be an int, got {value!r}")
    if not -(2**63) <= value < limit:
        raise ValueError(f"SamplingParams.{name} must fit in 64 bits, got {value}")


def _check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"SamplingParams.{name} must be a number, got {value!r}")
    try:
        value = float(value)  # an int past float's range raises OverflowError here
    except OverflowError:
        raise ValueError(f"SamplingParams.{name} must be finite, got an integer of {len(str(value))} digits") from None
    if not math.isfinite(value):
        raise ValueError(f"SamplingParams.{name} must be finite, got {value}")
    return value


def _normalize_stop(stop: str | Iterable[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = (stop,) if isinstance(stop, str) else tuple(stop)
    for s in items:
        if not isinstance(s, str) or not s:
            raise ValueError(f"SamplingParams.stop must hold non-empty strings, got {s!r}")
    return items


def _normalize_stop_token_ids(ids: Iterable[int] | None) -> tuple[int, ...]:
    if ids is None:
        return ()
    if isinstance(ids, (int, str)):
        raise TypeError(f"SamplingParams.stop_token_ids must be a list of ints, got {ids!r}")
    items = tuple(ids)
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise ValueError(f"SamplingParams.stop_token_ids must hold token ids >= 0, got {i!r}")
    return items
