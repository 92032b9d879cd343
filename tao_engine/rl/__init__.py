"""RL on the engine's own module: rollouts, completion log-probs (shared-prompt update), and the trainer built on them.

No submodule is named like a function it exports (`rollouts.py` defines `rollout`): importing a submodule binds its
name on this package, which would otherwise hide the function.
"""

from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from tao_engine.rl.evaluation import evaluate
from tao_engine.rl.logprobs import CompletionLogprobs, completion_logprobs
from tao_engine.rl.lora import LoraConfig, apply_lora, lora_disabled, merge_lora, unmerge_lora
from tao_engine.rl.lora_adapter import load_lora_adapter, save_lora_adapter
from tao_engine.rl.optim import GuardedStep, OptimConfig, build_optimizer, build_scheduler
from tao_engine.rl.prompt_data import PromptRecord, load_prompts
from tao_engine.rl.reference import frozen_copy
from tao_engine.rl.rollouts import RolloutError, Rollouts, RolloutTiming, SkippedPrompt, rollout
from tao_engine.rl.score_rollouts import score
from tao_engine.rl.tao import TAO, TAOResult
from tao_engine.rl.tao_config import TAOConfig
from tao_engine.rl.trainer import StepStats, TrainConfig, train_step

__all__ = [
    "TAO",
    "AlgorithmConfig",
    "CompletionLogprobs",
    "GuardedStep",
    "LoraConfig",
    "OptimConfig",
    "PromptRecord",
    "RolloutError",
    "RolloutTiming",
    "Rollouts",
    "SkippedPrompt",
    "StepStats",
    "TAOConfig",
    "TAOResult",
    "TrainConfig",
    "apply_lora",
    "build_optimizer",
    "build_scheduler",
    "completion_logprobs",
    "evaluate",
    "frozen_copy",
    "latest_checkpoint",
    "load_checkpoint",
    "load_lora_adapter",
    "load_prompts",
    "lora_disabled",
    "merge_lora",
    "rollout",
    "save_checkpoint",
    "save_lora_adapter",
    "score",
    "train_step",
    "unmerge_lora",
]
