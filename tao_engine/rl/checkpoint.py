"""Training checkpoints that resume exactly: weights (or LoRA adapter), optimizer, scheduler, RNGs, data cursor.

Layout of `<run_dir>/checkpoint-<step>/`:
    checkpoint.json      format, version, step, lora flag, generator names, and the manifest: every other file's
                         size and SHA-256, checked before anything loads (written last)
    model/               HF-layout model (save_pretrained), or
    adapter/             peft LoRA adapter (adapter_config.json + adapter_model.safetensors) when LoRA is on
    optimizer.pt         optimizer.state_dict()            (torch.save; read back with weights_only=True)
    scheduler.pt         scheduler.state_dict(), if any
    rng_state.pt         torch / CUDA / python / numpy / named generators (see rng_state.py)
    data_cursor.json     where the data stream stands (caller-defined)
    run_state.json       what else the run keeps between steps, e.g. the guards' evaluations (caller-defined)
    run_config.json      the run's configuration (caller-defined)

The whole directory is written into a hidden temp directory and renamed into place, so a crash mid-write leaves
every earlier checkpoint untouched and `latest_checkpoint` never sees a partial one. A file damaged afterwards (a full
disk, a copy cut short) fails the manifest check with an error naming it (`CorruptCheckpoint`), before the model or
the optimizer is touched; `tao_engine.rl.tao` then resumes from the newest intact checkpoint and says which it skipped.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from tao_engine.atomic_dir import atomic_directory
from tao_engine.models.loading import weight_files
from tao_engine.models.saving import SavesPretrained, save_pretrained
from tao_engine.rl.checkpoint_manifest import (
    CorruptCheckpoint,
    build_manifest,
    read_json_file,
    read_meta,
    verify_manifest,
)
from tao_engine.rl.lora import has_lora
from tao_engine.rl.lora_adapter import load_lora_adapter, save_lora_adapter
from tao_engine.rl.rng_state import capture_rng_state, restore_rng_state

FORMAT, VERSION = "tao_engine.checkpoint", 2  # 2: with the manifest; 1 (no manifest) still loads
META = "checkpoint.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_STALE = re.compile(r"^\.checkpoint-\d+\.(tmp|old)-")


@dataclass(frozen=True)
class Placement:
    """How the full tensors of a checkpoint become the model's and the optimizer's own when those are not whole (an
    FSDP2-sharded model keeps only its shard: tao_engine.distributed.fsdp.shard_like / shard_optimizer_state)."""

    tensor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (the model's tensor, full tensor) -> placed
    optimizer_state: Callable[[torch.optim.Optimizer, dict[str, Any]], dict[str, Any]]  # full state_dict -> placed


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    step: int
    lora: bool
    data_cursor: dict[str, Any]
    config: dict[str, Any]
    run_state: dict[str, Any]  # {} for a checkpoint written without one


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"checkpoint-{step}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, as (step, path), oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for child in run_dir.iterdir():
        match = _NAME.match(child.name)
        if match and (child / META).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def _json_text(value: Mapping[str, Any], field: str) -> str:
    try:
        return json.dumps(dict(value), indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"save_checkpoint: {field} must be JSON-serialisable (finite numbers too): {exc}") from exc


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    *,
    generators: Mapping[str, torch.Generator] | None = None,
    data_cursor: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    lora: bool | None = None,
    base_model_name_or_path: str | None = None,
    tokenizer: SavesPretrained | None = None,
    keep_last: int | None = None,
    keep_steps: Collection[int] = (),
    model_state: Mapping[str, torch.Tensor] | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
    run_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write `<run_dir>/checkpoint-<step>` atomically (see the module docstring) and return its path.

    lora: save only the adapter (None: whenever the model has LoRA layers). generators: named torch.Generators whose
    states are saved beside the global RNGs. keep_last: afterwards keep only that many newest checkpoints (the new
    one always stays), besides the checkpoints of `keep_steps` (e.g. the best one so far), which pruning never
    removes. run_state: JSON-serialisable state of the run kept beside the data cursor (the guards' evaluations).
    Leftover temp directories of crashed saves are removed first. model_state /
    optimizer_state: full state dicts to write instead of `model.state_dict()` / `optimizer.state_dict()` (a
    sharded model's, gathered by tao_engine.distributed.fsdp); the files are the same either way.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"save_checkpoint: step must be an integer >= 0, got {step!r}")
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
        raise ValueError(f"save_checkpoint: keep_last must be a positive integer or None, got {keep_last!r}")
    lora = has_lora(model) if lora is None else lora
    if lora and not has_lora(model):
        raise ValueError("save_checkpoint: lora=True but the model has no LoRA layers (apply_lora first)")
    cursor_text = _json_text(data_cursor or {}, "data_cursor")  # fail before writing anything
    config_text = _json_text(config or {}, "config")
    state_text = _json_text(run_state or {}, "run_state")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for child in run_dir.iterdir():
        if _STALE.match(child.name) and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)

    target = checkpoint_path(run_dir, step)
    with atomic_directory(target) as tmp:
        if lora:
            save_lora_adapter(model, tmp / "adapter", base_model_name_or_path, state=model_state)
        else:
            save_pretrained(model, tmp / "model", tokenizer=tokenizer, state=model_state)
        torch.save(dict(optimizer_state) if optimizer_state is not None else optimizer.state_dict(),
                   tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(capture_rng_state(generators), tmp / "rng_state.pt")
        (tmp / "data_cursor.json").write_text(cursor_text)
        (tmp / "run_config.json").write_text(config_text)
        (tmp / "run_state.json").write_text(state_text)
        meta = {"format": FORMAT, "version": VERSION, "step": step, "lora": lora,
                "has_scheduler": scheduler is not None, "generators": sorted(generators or {}),
                "files": build_manifest(tmp, skip=META)}
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")

    if keep_last is not None:
        older = [path for s, path in list_checkpoints(run_dir) if s != step and s not in set(keep_steps)]
        for path in older[: max(0, len(older) - (keep_last - 1))]:
            shutil.rmtree(path, ignore_errors=True)
    return target.resolve()


def _load_model_weights(model: nn.Module, model_dir: Path, place: Placement | None = None) -> None:
    """Copy an HF-layout directory's tensors into the existing parameters (same objects: the optimizer and the
    engine keep their references)."""
    current = model.state_dict()
    expected = set(current)
    if getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        expected.discard("lm_head.weight")
    loaded: set[str] = set()
    for shard in weight_files(model_dir):
        tensors = load_file(str(model_dir / shard))
        unexpected = sorted(set(tensors) - expected)
        if unexpected:
            raise ValueError(f"load_checkpoint: {model_dir / shard} holds tensors the model lacks: {unexpected[:4]}")
        if place is not None:
            tensors = {name: place.tensor(current[name], t) for name, t in tensors.items()}
        model.load_state_dict(tensors, strict=False)
        loaded.update(tensors)
    missing = sorted(expected - loaded)
    if missing:
        raise ValueError(f"load_checkpoint: {model_dir} lacks tensors of the model: {missing[:4]}")


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    *,
    generators: Mapping[str, torch.Generator] | None = None,
    restore_rng: bool = True,
    place: Placement | None = None,
) -> LoadedCheckpoint:
    """Restore a checkpoint directory into the given objects, in place, and return its step, cursor and config.

    Build them exactly as the run did (for LoRA: apply_lora before building the optimizer), then load. The global
    RNGs and the named `generators` (the same names as saved) are restored unless `restore_rng=False`. place: how
    the files' full tensors become a sharded model's and optimizer's (None: whole objects take them as they are).
    A missing, truncated or changed file raises CorruptCheckpoint naming it, before anything is loaded.
    """
    path = Path(path)
    meta_path = path / META
    meta = read_meta(meta_path)
    if meta.get("format") != FORMAT or meta.get("version") not in (1, VERSION):
        raise CorruptCheckpoint(meta_path, f"format {meta.get('format')!r} v{meta.get('version')!r}; expected "
                                           f"{FORMAT!r} v{VERSION}")
    if meta["version"] >= 2:
        verify_manifest(path, meta.get("files"), meta_path)
    lora = bool(meta.get("lora"))
    if lora != has_lora(model):
        raise ValueError(
            f"load_checkpoint: {path} was saved {'with' if lora else 'without'} LoRA but the model "
            f"{'has none' if lora else 'has LoRA layers'}; build the model as the run did before loading"
        )
    if scheduler is not None and not meta.get("has_scheduler"):
        raise ValueError(f"load_checkpoint: {path} was saved without a scheduler; pass scheduler=None")
    # Read every file before changing anything, so that a bad one leaves the model and optimizer as they were.
    cursor, config = read_json_file(path / "data_cursor.json"), read_json_file(path / "run_config.json")
    run_state = read_json_file(path / "run_state.json") if (path / "run_state.json").is_file() else {}
    optimizer_state = _torch_file(path / "optimizer.pt") if optimizer is not None else None
    scheduler_state = _torch_file(path / "scheduler.pt") if scheduler is not None else None
    rng_state = _torch_file(path / "rng_state.pt") if restore_rng else None
    if lora:
        load_lora_adapter(model, path / "adapter", place=None if place is None else place.tensor)
    else:
        _load_model_weights(model, path / "model", place)
    if optimizer is not None:
        optimizer.load_state_dict(optimizer_state if place is None else place.optimizer_state(optimizer,
                                                                                               optimizer_state))
    if scheduler is not None:
        scheduler.load_state_dict(scheduler_state)
    if restore_rng:
        restore_rng_state(rng_state, generators)
    return LoadedCheckpoint(path=path.resolve(), step=int(meta["step"]), lora=lora, data_cursor=cursor, config=config,
                            run_state=run_state)


def _torch_file(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CorruptCheckpoint(path, "missing") from None
    except Exception as exc:  # noqa: BLE001 - torch.load fails in many ways on a damaged file
        raise CorruptCheckpoint(path, f"cannot be read ({type(exc).__name__}: {exc})") from None
