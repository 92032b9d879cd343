"""RL on the engine's own module: rollouts, completion log-probs (shared-prompt update), and the trainer built on them.

Imports are lazy: `import tao_engine.rl` loads nothing heavy until a name is used. No submodule is named like a
function it exports (`rollouts.py` defines `rollout`): importing a submodule binds its name on this package, which
would otherwise hide the function.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    "CompletionLogprobs": "tao_engine.rl.logprobs",
    "completion_logprobs": "tao_engine.rl.logprobs",
    "RolloutError": "tao_engine.rl.rollouts",
    "RolloutTiming": "tao_engine.rl.rollouts",
    "Rollouts": "tao_engine.rl.rollouts",
    "SkippedPrompt": "tao_engine.rl.rollouts",
    "rollout": "tao_engine.rl.rollouts",
    "score": "tao_engine.rl.score_rollouts",
    "train_step": "tao_engine.rl.trainer",
    "TrainConfig": "tao_engine.rl.trainer",
    "StepStats": "tao_engine.rl.trainer",
    "AlgorithmConfig": "tao_engine.rl.algorithms",
    "TAO": "tao_engine.rl.tao",
    "TAOConfig": "tao_engine.rl.tao_config",
    "TAOResult": "tao_engine.rl.tao",
    "PromptRecord": "tao_engine.rl.prompt_data",
    "load_prompts": "tao_engine.rl.prompt_data",
    "evaluate": "tao_engine.rl.evaluation",
    "frozen_copy": "tao_engine.rl.reference",
    "LoraConfig": "tao_engine.rl.lora",
    "apply_lora": "tao_engine.rl.lora",
    "merge_lora": "tao_engine.rl.lora",
    "unmerge_lora": "tao_engine.rl.lora",
    "lora_disabled": "tao_engine.rl.lora",
    "save_lora_adapter": "tao_engine.rl.lora_adapter",
    "load_lora_adapter": "tao_engine.rl.lora_adapter",
    "OptimConfig": "tao_engine.rl.optim",
    "build_optimizer": "tao_engine.rl.optim",
    "build_scheduler": "tao_engine.rl.optim",
    "GuardedStep": "tao_engine.rl.optim",
    "save_checkpoint": "tao_engine.rl.checkpoint",
    "load_checkpoint": "tao_engine.rl.checkpoint",
    "latest_checkpoint": "tao_engine.rl.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tao_engine.rl' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
