"""What SFT and TAO share, so that they differ only in what they learn from: one `TAOConfig` built in code (LoRA,
AdamW and its schedule, trainer settings, engine), a `TAO` object built from it on the benchmark's model (LoRA
applied, engine on the same module, optimizer), the prompt cursor, and the per-step bookkeeping."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.quality.evaluation import evaluate_accuracy
from bench.quality.profiles import Profile
from bench.quality.records import Example
from bench.quality.tasks import Task
from tao_engine.engine import EngineConfig, SamplingParams
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.exploration.config import ExplorationConfig
from tao_engine.rl.lora import LoraConfig
from tao_engine.rl.optim import OptimConfig
from tao_engine.rl.prompt_data import PromptCursor
from tao_engine.rl.tao_config import DataSection, RunSection, ScoringSection, TAOConfig, TrainSection

# A step function: (step, the step's examples) -> the step's metrics.
StepFn = Callable[[int, Sequence[Example]], dict[str, Any]]


def tuning_config(profile: Profile, task: Task, algorithm: str, n: int, seed: int, run_dir: str,
                  exploration: ExplorationConfig | None = None) -> TAOConfig:
    """The TOML-equivalent config of one tuned cell; SFT (algorithm "bon_sft", n = 1) shares all but sampling, the
    exploration methods all but [exploration]."""
    return TAOConfig(
        data=DataSection(prompts_per_step=profile.prompts_per_step),
        # top_p = 1, no penalties: the sampler's log-probs are the trainer's, and the entropy estimate is unbiased.
        sampling=SamplingParams(n=n, temperature=profile.temperature, top_p=1.0,
                                max_tokens=profile.max_tokens[task.name]),
        scoring=ScoringSection(scorers=task.rule_scorers),
        algorithm=AlgorithmConfig(name=algorithm),
        optim=OptimConfig(lr=profile.lr, warmup_steps=1),
        lora=LoraConfig(r=profile.lora_r, alpha=2.0 * profile.lora_r),
        train=TrainSection(max_tokens_per_forward=2048),  # activations of 2k tokens: ~2.5 GB on SmolLM2
        engine=EngineConfig(kv_cache_bytes=profile.kv_cache_bytes, max_num_seqs=128, seed=seed),
        run=RunSection(steps=profile.steps, output_dir=run_dir, seed=seed),
        exploration=exploration if exploration is not None else ExplorationConfig(),
    )


def build_tao(config: TAOConfig, model: Any, tokenizer: Any, scorer: Any) -> Any:
    """A `TAO` on the given model: LoRA applied in place, its engine samples from that very module."""
    from tao_engine.rl.tao import TAO

    return TAO(config, model=model, tokenizer=tokenizer, scorer=scorer, progress=False)


def run_steps(
    tao: Any, task: Task, train: Sequence[Example], test: Sequence[Example], profile: Profile, seed: int,
    step_fn: StepFn, curve: bool,
) -> dict[str, Any]:
    """`profile.steps` steps of `step_fn` over seeded shuffled passes of `train`, the held-out accuracy at the end
    (and at `profile.curve_steps` when `curve`). Returns history, curve, final eval, train seconds."""
    cursor = PromptCursor(len(train), seed=seed)
    history: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    train_s = 0.0
    max_tokens = profile.max_tokens[task.name]
    for step in range(1, profile.steps + 1):
        chosen = [train[i] for i in cursor.take(profile.prompts_per_step)]
        start = time.perf_counter()
        metrics = step_fn(step, chosen)
        train_s += time.perf_counter() - start
        history.append({"step": step, **metrics})
        if curve and step in profile.curve_steps:
            points.append({"step": step, "accuracy": evaluate_accuracy(tao.engine, task, test, max_tokens)["accuracy"]})
    final = evaluate_accuracy(tao.engine, task, test, max_tokens)
    points.append({"step": profile.steps, "accuracy": final["accuracy"]})
    return {"history": history, "curve": points, "eval": final, "train_s": train_s}


def train_stats(stats: Any) -> dict[str, Any]:
    keep = ("loss", "reward_mean", "reward_std", "zero_variance_frac", "groups_trained", "grad_norm", "lr", "tokens",
            "optimizer_steps", "skipped_steps", "step_s")
    flat = stats.as_dict()
    return {k: flat[k] for k in keep if k in flat}
