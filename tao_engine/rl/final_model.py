"""The tuned model as a run leaves it, and `tao-engine export RUN_DIR [--step K]`.

A run's `final/` is an HF-layout directory with the LoRA adapters merged into the weights, so it serves at the base
model's cost; `final_adapter/` keeps the adapters alone (peft's format). `export` writes the same from any intact
checkpoint of a run: it rebuilds the base model from the run's own configuration, loads the checkpoint's weights or
adapters (their manifest is checked first) and merges, so a run stopped early, or an earlier step than the last, can
be served without resuming anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn


def load_run_model(config: Any) -> tuple[nn.Module, Any]:
    """(model, tokenizer) of `[model] path` ("smollm2": the bundled SmolLM2) as a run loads it."""
    from tao_engine.pretrained import load_pretrained

    path = config.model.path
    if path == "smollm2":
        from tao_engine.bundled import smollm2_dir

        path = str(smollm2_dir())
    return load_pretrained(path, dtype=config.model.dtype, device=config.engine.device)


def save_final_model(model: nn.Module, tokenizer: Any, target: Path, adapter_dir: Path | None,
                     base_model: str | None, full_state: Mapping[str, torch.Tensor] | None = None) -> Path:
    """`model` at `target` in HF layout with its LoRA adapters (if any) merged; the adapters alone at `adapter_dir`.
    full_state: the whole state dict when the module holds only shards (FSDP2), merged there instead."""
    from tao_engine.models.saving import save_pretrained
    from tao_engine.rl.lora import has_lora, merge_lora, merged_state_dict, unmerge_lora
    from tao_engine.rl.lora_adapter import save_lora_adapter

    if not has_lora(model):
        return save_pretrained(model, target, tokenizer=tokenizer, state=full_state)
    if adapter_dir is not None:
        save_lora_adapter(model, adapter_dir, base_model, state=full_state)
    if full_state is not None:  # sharded: merge in the gathered state, the shards stay as they are
        return save_pretrained(model, target, tokenizer=tokenizer, state=merged_state_dict(model, full_state))
    merge_lora(model)
    try:
        return save_pretrained(model, target, tokenizer=tokenizer)
    finally:
        unmerge_lora(model)


def export_checkpoint(run_dir: str | Path, step: int | None = None, output: str | Path | None = None,
                      overwrite: bool = False) -> tuple[Path, int]:
    """Write the merged model of checkpoint `step` (default: the newest intact one) of the run in `run_dir` to
    `output` (default: `<run_dir>/final`); returns (the directory written, the step)."""
    from tao_engine.rl.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
    from tao_engine.rl.checkpoint_manifest import read_json_file
    from tao_engine.rl.lora import apply_lora
    from tao_engine.rl.tao_config import TAOConfig

    run_dir = Path(run_dir)
    steps = [s for s, _ in list_checkpoints(run_dir)]
    if not steps:
        raise FileNotFoundError(f"export: {run_dir} holds no checkpoint (checkpoint-<step>/); give a run's "
                                "run.output_dir")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ValueError(f"export: {run_dir} has no checkpoint of step {step}; it has steps {steps}")
    path = checkpoint_path(run_dir, step)
    target = Path(output) if output is not None else run_dir / "final"
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise ValueError(f"export: {target} exists; give --output DIR, or --overwrite to replace it")
    config = TAOConfig.from_dict(read_json_file(path / "run_config.json"))
    model, tokenizer = load_run_model(config)
    if config.lora is not None:
        apply_lora(model, config.lora)
    load_checkpoint(path, model, restore_rng=False)  # the manifest is checked before any weight loads
    adapter = target.with_name(target.name + "_adapter") if config.lora is not None else None
    return save_final_model(model, tokenizer, target, adapter, config.model.path), step
