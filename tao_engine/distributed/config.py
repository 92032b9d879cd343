"""`DistributedSection`: the `[distributed]` table of a tuning config. It only matters when the run is launched by
torchrun (or any launcher that sets RANK / WORLD_SIZE / MASTER_ADDR); a plain single process ignores it.

    [distributed]
    strategy = "ddp"     # replicated weights, gradients all-reduced after each minibatch's backward; or "fsdp2":
                         #   parameters, gradients and optimizer state sharded across ranks (fsdp.py), full weights
                         #   gathered for generation
    backend = "auto"     # "nccl" on CUDA, "gloo" on CPU; or name one
    timeout_s = 600      # a collective that waits longer than this fails instead of hanging the run
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tao_engine.config_dict import dataclass_from_dict

STRATEGIES = ("ddp", "fsdp2")
BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True)
class DistributedSection:
    strategy: str = "ddp"
    backend: str = "auto"
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"[distributed] strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"[distributed] backend must be one of {BACKENDS}, got {self.backend!r}")
        value = self.timeout_s
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"[distributed] timeout_s must be a number of seconds > 0, got {value!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DistributedSection:
        return dataclass_from_dict(cls, d)
