"""A TAOConfig turned into the parts a tuning run works with: the model (LoRA applied, placed by the parallel
strategy), its reference, scorers and task routing, optimizer and LR schedule, the update's TrainConfig, guards and
evaluators. The loop (tao.py) only uses them; the engine is built there, on first use, once its KV cache is sized.

    parts = build_parts(config)                       # or with model / tokenizer / scorer objects (library use)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tao_engine.distributed.context import DistributedContext
from tao_engine.engine.prompts import plain_prompt_rendering
from tao_engine.rl.evaluators import evaluators_for
from tao_engine.rl.exploration.routing import TaskRouting
from tao_engine.rl.final_model import load_run_model
from tao_engine.rl.guards import RunGuards
from tao_engine.rl.guards.warmup import rule_scorer_labels
from tao_engine.rl.lora import apply_lora, has_lora
from tao_engine.rl.optim import build_optimizer, build_scheduler
from tao_engine.rl.parallel_strategy import SingleProcess, strategy_for
from tao_engine.rl.tao_config import TAOConfig
from tao_engine.rl.trainer import TrainConfig
from tao_engine.scoring.registry import build_composite


@dataclass
class TAOParts:
    model: nn.Module  # the one module the engine samples from and the update trains
    tokenizer: Any
    strategy: SingleProcess  # how the run spreads over processes (rl/parallel_strategy.py)
    reference: nn.Module | None  # the frozen copy the update is anchored to, when the algorithm needs one
    scorer: Any  # the run-level composite scorer (None when every [tasks] table lists its own)
    routing: TaskRouting  # exploration strategies and per-task scorers
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    train_config: TrainConfig
    guards: RunGuards
    evaluators: dict[str | None, Any]  # how eval (and labeled probe) replies are checked, per task
    prompt_rendering: str  # one line: how plain-text prompts reach the model ([data] chat_template)


def build_parts(config: TAOConfig, model: nn.Module | None = None, tokenizer: Any = None, scorer: Any = None,
                distributed: DistributedContext | None = None) -> TAOParts:
    """The parts of a run; model/tokenizer/scorer given as objects are used as they are (LoRA is still applied)."""
    if model is None:
        model, tokenizer = load_run_model(config)
    if config.lora is not None and not has_lora(model):
        apply_lora(model, config.lora, generator=torch.Generator().manual_seed(config.run.seed))
    strategy = strategy_for(distributed)
    # Under LoRA the base weights are the reference (train_step disables the adapters): no second copy.
    reference = strategy.place(model, config.algorithm.needs_reference and config.lora is None)
    # With [tasks] that each list their scorers, the run-level [scoring] may be left out.
    if scorer is None and (config.scoring.scorers or not config.tasks):
        scorer = build_scorer(config)
    routing = TaskRouting.from_config(
        config.exploration, config.tasks, config.scoring, config.sampling, scorer,
        config.train.max_tokens_per_forward, config.train.bf16_autocast,
    )
    optimizer = build_optimizer(model, config.optim)
    rule_labels = {label for s in routing.scorers.values() if s is not None for label in rule_scorer_labels(s)}
    return TAOParts(
        model=model, tokenizer=tokenizer, strategy=strategy, reference=reference, scorer=scorer, routing=routing,
        optimizer=optimizer, lr_scheduler=build_scheduler(optimizer, config.optim, max(1, config.run.steps)),
        train_config=train_config(config),
        guards=RunGuards(config.guards, rule_labels),
        evaluators=evaluators_for(config.run.evaluator, config.run.eval_extractor, config.tasks),
        prompt_rendering=plain_prompt_rendering(tokenizer, config.data.chat_template,
                                                "[data] chat_template = false", "[data] chat_template = true"),
    )


def train_config(config: TAOConfig) -> TrainConfig:
    """The update's TrainConfig: [train] passed through field by field (TrainSection's fields are TrainConfig's, by
    name), with [algorithm], [optim] max_grad_norm and [run] seed."""
    return TrainConfig(algorithm=config.algorithm, max_grad_norm=config.optim.max_grad_norm, seed=config.run.seed,
                       **dataclasses.asdict(config.train))


def build_scorer(config: TAOConfig) -> Any:
    if not config.scoring.scorers:
        raise ValueError("tao config [scoring]: give at least one [[scoring.scorers]] table (e.g. name = \"length\")")
    return build_composite(list(config.scoring.scorers), config.scoring.combine, config.scoring.on_error)
