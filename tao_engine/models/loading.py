"""Load an HF-layout model directory (config.json + safetensors, single or sharded) into our decoder.

The model is built on the meta device and every tensor is assigned in place from its shard, so weights are
allocated once (no random init followed by a copy).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from tao_engine.models.config import ModelConfig
from tao_engine.models.registry import get_model_class

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Tensors that some checkpoints carry but that we recompute (rotary tables).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(ValueError):
    """A model directory cannot be loaded; the message names the file and the problem."""


def resolve_dtype(
    dtype: torch.dtype | str | None, config: ModelConfig, device: torch.device | str = "cpu"
) -> torch.dtype:
    """None -> float32; "auto" -> the fastest dtype `device` computes natively (tao_engine.precision: bf16 on CPUs
    with AMX or AVX512-BF16 and on bf16 GPUs, else float32); "checkpoint" -> the checkpoint's dtype from
    config.json; names or torch dtypes as given."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        from tao_engine.precision import choose_dtype

        return choose_dtype(device).dtype
    name = config.torch_dtype if dtype == "checkpoint" else dtype
    if name is None:
        return torch.float32
    name = str(name).removeprefix("torch.")
    if name not in _DTYPES:
        raise ModelLoadError(f"dtype {dtype!r}: unsupported; choose one of {sorted(_DTYPES)}, 'auto' or 'checkpoint'")
    return _DTYPES[name]


def read_config(model_dir: str | Path) -> ModelConfig:
    path = Path(model_dir) / "config.json"
    if not Path(model_dir).is_dir():
        raise ModelLoadError(
            f"{model_dir}: not a directory; pass an HF-layout model directory (config.json + safetensors)"
        )
    if not path.is_file():
        raise ModelLoadError(f"{path}: missing; an HF-layout model directory needs config.json")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: invalid JSON ({exc})") from exc
    try:
        return ModelConfig.from_dict(raw)
    except ValueError as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc


def weight_files(model_dir: str | Path) -> dict[str, list[str] | None]:
    """Map each safetensors file of the directory to the tensor names the index assigns it (None: unindexed)."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX_FILE
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelLoadError(
                f"{index}: not a valid safetensors index (needs a 'weight_map' object): {exc}"
            ) from exc
        files: dict[str, list[str] | None] = {}
        for name, shard in weight_map.items():
            files.setdefault(shard, []).append(name)  # type: ignore[union-attr]
        for shard in files:
            if not (model_dir / shard).is_file():
                raise ModelLoadError(f"{model_dir / shard}: missing; {index} lists it as a shard")
        return files
    if (model_dir / SINGLE_FILE).is_file():
        return {SINGLE_FILE: None}
    raise ModelLoadError(
        f"{model_dir}: no weights found; expected {SINGLE_FILE} or {INDEX_FILE} "
        "(PyTorch .bin checkpoints are not supported: convert them to safetensors)"
    )


def load_model(
    model_dir: str | Path, dtype: torch.dtype | str | None = None, device: torch.device | str = "cpu"
) -> nn.Module:
    """Build the model of `model_dir` and load its weights, in `dtype` (default float32) on `device`."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    target_dtype = resolve_dtype(dtype, config, device)
    try:
        cls = get_model_class(config)
    except ValueError as exc:
        raise ModelLoadError(f"{model_dir / 'config.json'}: {exc}") from exc
    with torch.device("meta"):
        model = cls(config)
    expected = {name: p.shape for name, p in model.state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)

    skip_head = config.tie_word_embeddings  # a tied head may still be stored: it is the embedding, not read
    assign_weights(model, model_dir, weight_files(model_dir), expected, device, target_dtype,
                   f"for {config.architectures[0]}", skip=lambda name: skip_head and name == "lm_head.weight")
    model.tie_weights()
    return model.eval()


def assign_weights(model: nn.Module, model_dir: Path, files: Iterable[str], expected: Mapping[str, torch.Size],
                   device: torch.device | str, dtype: torch.dtype, what: str,
                   skip: Callable[[str], bool] = lambda name: False) -> None:
    """Assign each tensor of the safetensors `files` in place into `model` (built on the meta device) in `dtype` on
    `device`: every name in `expected` with its shape, none else (`what` says what the names should belong to, e.g.
    "for LlamaForCausalLM"), none missing; `skip` names tensors stored but not loaded."""
    loaded: set[str] = set()
    for shard in files:
        path = model_dir / shard
        tensors = {}
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in f.keys():
                    if name.endswith(IGNORED_SUFFIXES) or skip(name):
                        continue
                    if name not in expected:
                        raise ModelLoadError(f"{path}: unexpected tensor {name!r} {what} (is config.json the right "
                                             "one for these weights?)")
                    tensor = f.get_tensor(name)
                    if tuple(tensor.shape) != tuple(expected[name]):
                        raise ModelLoadError(
                            f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, but config.json implies "
                            f"{tuple(expected[name])}"
                        )
                    tensors[name] = tensor.to(device=device, dtype=dtype)
        except SafetensorError as exc:
            raise ModelLoadError(f"{path}: corrupt or unreadable safetensors file ({exc})") from exc
        model.load_state_dict(tensors, strict=False, assign=True)
        loaded.update(tensors)
    missing = sorted(set(expected) - loaded)
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise ModelLoadError(f"{model_dir}: {len(missing)} weight tensors are missing from the safetensors: {shown}")
