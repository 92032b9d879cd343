"""Write a model (and optionally its tokenizer) as an HF-layout directory, atomically.

Everything is written into a temporary directory beside the target, which is then renamed into place: a crash
never leaves a half-written model where a loader would find it, and an existing directory is replaced only once
the new one is complete.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import save_file
from torch import nn

from tao_engine.atomic_dir import atomic_directory

DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class SavesPretrained(Protocol):
    def save_pretrained(self, directory: str | Path) -> None: ...


def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards


def write_weights(model: nn.Module, directory: Path, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                  state: Mapping[str, torch.Tensor] | None = None) -> list[str]:
    """Write the model's tensors (or `state`, its full state dict gathered elsewhere) as safetensors, sharded above
    `max_shard_bytes`. Returns the file names."""
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {
        name: t.detach().to("cpu").contiguous()
        for name, t in (model.state_dict() if state is None else state).items()
        if not (tied and name == "lm_head.weight")  # the tied head is the embedding; HF omits it
    }
    metadata = {"format": "pt"}
    shards = _shards(state, max_shard_bytes)
    if len(shards) == 1:
        save_file(shards[0], str(directory / "model.safetensors"), metadata=metadata)
        return ["model.safetensors"]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards, strict=False):
        save_file(shard, str(directory / name), metadata=metadata)
        weight_map.update({tensor_name: name for tensor_name in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return names


def save_pretrained(
    model: nn.Module,
    out_dir: str | Path,
    tokenizer: SavesPretrained | None = None,
    generation_config: dict[str, Any] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    state: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Save `model` (its config and weights), the tokenizer files and generation_config.json to `out_dir`. state:
    the weights to write instead of `model.state_dict()` (a sharded model's, gathered; or adapters merged)."""
    out_dir = Path(out_dir).resolve()
    with atomic_directory(out_dir) as tmp:
        config = model.config.to_dict()
        dtype = next(model.parameters()).dtype
        config["torch_dtype"] = _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        write_weights(model, tmp, max_shard_bytes, state)
        if generation_config is not None:
            (tmp / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out_dir
