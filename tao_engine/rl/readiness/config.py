"""`ProbeSection` (`[probe]` in a TAO TOML): how the readiness probe samples before any compute is spent on tuning.

    [probe]
    prompts = 32              # prompts probed (a seeded sample of [data] prompts, or the labeled file's first ones)
    labeled = "probe.jsonl"   # optional: prompts with their answers ("answer"), for pass@k, maj@k and reward pair
                              #   accuracy; kept apart from [data] eval and never trained on
    before_tune = true        # `tao-engine tune` probes first and prints the verdict (--probe.before_tune false)
    on_no_go = "warn"         # "warn": print the verdict and tune anyway; "stop": a no-go verdict ends tune (exit 3)
"""

from __future__ import annotations

from dataclasses import dataclass

ON_NO_GO = ("warn", "stop")


@dataclass(frozen=True)
class ProbeSection:
    prompts: int = 32
    labeled: str | None = None
    before_tune: bool = True
    on_no_go: str = "warn"

    def __post_init__(self) -> None:
        if isinstance(self.prompts, bool) or not isinstance(self.prompts, int) or self.prompts < 1:
            raise ValueError(f"[probe] prompts must be an integer >= 1, got {self.prompts!r}")
        if self.on_no_go not in ON_NO_GO:
            raise ValueError(f"[probe] on_no_go must be one of {ON_NO_GO}, got {self.on_no_go!r}")
