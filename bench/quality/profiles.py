"""Benchmark sizes: "full" (the documented run, at most 90 minutes on the 2-core development CPU; the estimate is in
bench/bench_quality.py's docstring) and "smoke" (seconds, for tests and CI)."""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("base", "sft", "tao", "tao_judge", "tao_reason", "tao_mixed", "speed")


@dataclass(frozen=True)
class Profile:
    name: str
    steps: int  # optimizer steps of every tuned method (SFT and TAO alike)
    prompts_per_step: int  # training questions per step (SFT: one gold answer each; TAO: n samples each)
    samples: tuple[int, ...]  # TAO's samples per prompt for the compute-scaling cells
    rules_n: int  # the n of the "TAO (rules)" table row (one of `samples`) and of the speed cell's tuned model
    judge_n: int  # samples per prompt of TAO with the LLM judge
    curve_steps: tuple[int, ...]  # steps at which SFT, TAO (n = rules_n) and TAO-judge are also evaluated
    train_prompts: int  # training questions used (the first ones of the split)
    test_prompts: int  # held-out questions evaluated (the first ones of the split)
    max_tokens: dict[str, int]  # per task, for sampling and greedy evaluation
    judge_max_tokens: int
    lr: float
    lora_r: int
    speed_tokens: int  # tokens per answer in the inference-cost measurement
    explore_max_tokens: dict[str, int]  # per task: tokens per reasoning generation of tao_reason / tao_mixed
    kv_cache_bytes: int = 768 * 2**20  # ~17k tokens of SmolLM2 KV: a 60-question eval or 4 x 16 samples fit
    # TAO's sampling temperature. 0.7, not 1.0: at 1.0 SmolLM2-135M's math samples are mostly noise (majority of 8
    # right on 0 of 60 test problems, any of 8 right on 4) where 0.7 gives 3 and 8 of 60.
    temperature: float = 0.7
    methods: tuple[str, ...] = field(default=METHODS)

    def __post_init__(self) -> None:
        if self.rules_n not in self.samples:
            raise ValueError(f"profile {self.name}: rules_n {self.rules_n} must be one of samples {self.samples}")
        if any(s < 1 or s >= self.steps for s in self.curve_steps):
            raise ValueError(f"profile {self.name}: curve_steps {self.curve_steps} must lie in [1, steps)")
        if min(self.samples) < 2 or self.judge_n < 2:
            raise ValueError(f"profile {self.name}: group methods need >= 2 samples per prompt")


FULL = Profile(
    name="full",
    steps=6,
    prompts_per_step=4,
    samples=(2, 4, 8, 16),
    rules_n=8,
    judge_n=4,
    curve_steps=(2, 4),
    train_prompts=200,  # all 160 generated training questions
    test_prompts=60,  # all of them: 48 SQL, 60 math
    max_tokens={"sql": 64, "math": 80},
    judge_max_tokens=24,
    lr=5e-4,
    lora_r=16,
    speed_tokens=32,
    explore_max_tokens={"sql": 128, "math": 160},
)

SMOKE = Profile(
    name="smoke",
    steps=2,
    prompts_per_step=2,
    samples=(2, 4),
    rules_n=2,
    judge_n=2,
    curve_steps=(1,),
    train_prompts=6,
    test_prompts=3,
    max_tokens={"sql": 6, "math": 6},
    judge_max_tokens=4,
    lr=1e-2,
    lora_r=4,
    speed_tokens=4,
    explore_max_tokens={"sql": 8, "math": 8},
    kv_cache_bytes=8 * 2**20,
)

PROFILES = {"full": FULL, "smoke": SMOKE}
