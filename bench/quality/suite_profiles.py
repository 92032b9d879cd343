"""The quality suite's sizes: "full" (the documented run: at most 120 minutes on the 2-core development CPU) and
"smoke" (seconds on a tiny model, run by `make test`). Every tuned method shares the optimizer, LoRA, schedule,
steps and prompts per step, so they differ only in what they learn from."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SUITE_METHODS = ("probe", "base", "sft", "bon_sft", "tao", "tao_n", "multitask", "speed")


@dataclass(frozen=True)
class SuiteProfile:
    name: str
    tasks: tuple[str, ...]
    steps: int  # optimizer steps of every tuned method
    prompts_per_step: int  # training prompts per step (SFT: one gold answer each; TAO: n samples each)
    n: int  # TAO's samples per prompt (the "tao" row; best-of-N SFT samples as many)
    samples: tuple[int, ...]  # compute scaling: TAO at these n, same steps
    seeds: tuple[int, ...]  # of TAO (n = n) and SFT: the rows every target compares
    scaling_seeds: tuple[int, ...]  # of the tao_n cells at n != n (n = n reuses the "tao" cells)
    secondary_seeds: tuple[int, ...]  # of best-of-N SFT and multi-task TAO
    test_prompts: int  # labeled test questions per task (all of the split at most)
    probe_prompts: int  # labeled probe questions per task
    lr: float
    lora_r: int
    guards: Mapping[str, Any]  # the [guards] table of every TAO cell
    contrast_methods: tuple[str, ...] = ("probe", "base", "tao")  # on the below-competence contrast tasks
    speed_prompts: int = 64
    speed_tokens: int = 32
    kv_cache_bytes: int = 768 * 2**20
    max_tokens: Mapping[str, int] = field(default_factory=dict)  # per task; empty: each task's own budget
    # "test", or "probe" for a development run: recipes are chosen on the labeled probe split, never on the test one
    eval_split: str = "test"

    def __post_init__(self) -> None:
        if self.n not in self.samples:
            raise ValueError(f"profile {self.name}: n {self.n} must be one of samples {self.samples}")
        if min(self.samples) < 2:
            raise ValueError(f"profile {self.name}: group methods need >= 2 samples per prompt")
        if self.eval_split not in ("test", "probe"):
            raise ValueError(f"profile {self.name}: eval_split must be 'test' or 'probe', got {self.eval_split!r}")
        if not (set(self.scaling_seeds) | set(self.secondary_seeds)) <= set(self.seeds):
            raise ValueError(f"profile {self.name}: scaling_seeds and secondary_seeds must be among seeds")


# The guards of every TAO cell (tao_engine.rl.guards.config): two steps of format warm-up, minority answers pushed
# down at half strength, a cross-prompt collapse penalized, and the checkpoint with the best held-out label-free
# score as the result (16 unlabeled training prompts held out). No group filter: in a development run (probe
# split) skipping groups whose top answer held < 25% removed 2 of 3 text-to-SQL groups (72% of its queries have no
# result to vote with) and with them the verifier's signal, whose pair accuracy was 0.97.
GUARDS = {"warmup_steps": 2, "minority_weight": 0.5, "collapse_share": 0.6, "collapse_min_prompts": 4,
          "holdout_prompts": 16, "holdout_every": 2, "holdout_n": 4, "patience": 2, "keep_best": True}

# Sized for the 120-minute budget on the 2-core development CPU (two cells at a time, one thread each): a TAO cell
# at n = 8 (8 steps x 8 prompts, the held-out scores, the 200-question test) takes ~8 minutes there, so the rows
# every target compares (TAO at n = 8, SFT, base) get three seeds, and best-of-N SFT, TAO at n = 2, 4, 16 and
# multi-task TAO one; the contrast tasks get the probe's verdict and their base accuracy (their TAO and SFT rows
# are in bench/results/quality-earlier.md). `--profile complete` runs every row with three seeds (~4 hours).
FULL = SuiteProfile(
    name="full",
    tasks=("extract", "arith", "table_sql", "passage_qa", "sql", "math"),
    steps=8,
    prompts_per_step=8,
    n=8,
    samples=(2, 4, 8, 16),
    seeds=(0, 1, 2),
    scaling_seeds=(0,),
    secondary_seeds=(0,),
    test_prompts=200,
    probe_prompts=32,
    lr=5e-4,
    lora_r=16,
    guards=GUARDS,
    contrast_methods=("probe", "base"),
)

COMPLETE = dataclasses.replace(FULL, name="complete", scaling_seeds=(0, 1, 2), secondary_seeds=(0, 1, 2),
                               contrast_methods=("probe", "base", "tao"))

SMOKE = SuiteProfile(
    name="smoke",
    tasks=("extract", "arith"),
    steps=2,
    prompts_per_step=2,
    n=2,
    samples=(2, 4),
    seeds=(0,),
    scaling_seeds=(0,),
    secondary_seeds=(0,),
    test_prompts=3,
    probe_prompts=3,
    lr=1e-2,
    lora_r=4,
    guards={"warmup_steps": 1, "holdout_prompts": 2, "holdout_every": 1, "holdout_n": 2, "keep_best": True},
    contrast_methods=(),
    speed_prompts=2,
    speed_tokens=4,
    kv_cache_bytes=8 * 2**20,
    max_tokens={"extract": 6, "arith": 6},
)

SUITE_PROFILES = {"full": FULL, "complete": COMPLETE, "smoke": SMOKE}
