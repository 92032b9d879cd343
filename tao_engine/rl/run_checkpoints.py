"""`RunCheckpoints`: what a TAO run keeps on disk, whatever the parallel strategy: step checkpoints (save, resume
from the newest intact one, reload a step's weights) and the merged final model.

The strategy hands over the full state (FSDP2 gathers its shards onto rank 0) and one process writes the same files
whatever the strategy, so a checkpoint loads at any world size, with any strategy; loading, every rank reads the
full files and keeps its own shard (`strategy.placement()`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tao_engine.rl.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from tao_engine.rl.final_model import save_final_model
from tao_engine.rl.guards import RunGuards
from tao_engine.rl.metrics_log import MetricsLog
from tao_engine.rl.parallel_strategy import SingleProcess
from tao_engine.rl.prompt_data import PromptCursor
from tao_engine.rl.resume import load_newest_intact
from tao_engine.rl.tao_config import TAOConfig


class RunCheckpoints:
    def __init__(self, config: TAOConfig, model: nn.Module, tokenizer: Any, optimizer: torch.optim.Optimizer,
                 lr_scheduler: Any, strategy: SingleProcess, guards: RunGuards, engine: Callable[[], Any]) -> None:
        """engine: the run's engine, asked for when needed (its seed generator is saved; it is built on first use)."""
        self.config = config
        self.run_dir = Path(config.run.output_dir)
        self.model, self.tokenizer, self.optimizer, self.lr_scheduler = model, tokenizer, optimizer, lr_scheduler
        self.strategy, self.guards, self._engine = strategy, guards, engine

    def path(self, step: int) -> Path:
        return checkpoint_path(self.run_dir, step)

    def save(self, step: int, cursor: PromptCursor) -> Path:
        """The checkpoint of `step` (every rank calls it; one writes); returns its path."""
        only = _is_adapter if self.config.lora is not None else None  # a LoRA checkpoint holds the adapters only
        model_state, optimizer_state = self.strategy.full_state(self.model, self.optimizer, "checkpoint", only)
        if not self.strategy.writes_outputs:
            return self.path(step)
        return save_checkpoint(
            self.run_dir, step, self.model, self.optimizer, self.lr_scheduler,
            generators={"engine": self._engine().generator}, data_cursor=cursor.state(),
            config=self.config.to_dict(), base_model_name_or_path=self.config.model.path,
            keep_last=self.config.run.keep_last,
            keep_steps=[self.guards.best_step] if self.guards.best_step is not None else [],
            model_state=model_state, optimizer_state=optimizer_state, run_state={"guards": self.guards.state()},
        )

    def resume(self, cursor: PromptCursor, log: MetricsLog) -> int:
        """The step of the newest intact checkpoint, loaded (tao_engine.rl.resume); 0 when there is none yet."""
        engine, place = self._engine(), self.strategy.placement()
        loaded = load_newest_intact(
            self.run_dir, self.config.to_dict(), TAOConfig().to_dict(), announce=self.strategy.writes_outputs,
            load=lambda path: load_checkpoint(path, self.model, self.optimizer, self.lr_scheduler,
                                              generators={"engine": engine.generator}, place=place))
        if loaded is None:
            log.truncate_after(-1)  # nothing to resume: the run starts over, so does its log
            return 0
        cursor.load_state(loaded.data_cursor)
        self.guards.load_state(loaded.run_state.get("guards", {}), loaded.step)
        log.truncate_after(loaded.step)
        engine.weights_updated()  # the cached prompt KV predates the loaded weights
        return loaded.step

    def load_weights_of(self, step: int) -> None:
        """The model's weights (or adapters) from the checkpoint of `step`; the optimizer and RNGs stay."""
        load_checkpoint(self.path(step), self.model, restore_rng=False, place=self.strategy.placement())
        self._engine().weights_updated()

    def save_final(self) -> Path:
        """The tuned model in HF layout, adapters merged, so it serves at the base model's cost (final_model.py)."""
        target = self.run_dir / "final"
        # All of it, gathered onto rank 0 under FSDP2 (a LoRA run's too: the base to merge the adapters into).
        full, _ = self.strategy.full_state(self.model, None, "final model")
        if not self.strategy.writes_outputs:
            return target
        adapter = self.run_dir / "final_adapter" if self.config.lora is not None else None
        return save_final_model(self.model, self.tokenizer, target, adapter, self.config.model.path, full)


def _is_adapter(name: str) -> bool:
    return ".lora_" in name
