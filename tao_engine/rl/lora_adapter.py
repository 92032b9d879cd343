"""LoRA adapters on disk in peft's format: `adapter_config.json` + `adapter_model.safetensors`.

peft names a tensor after its module inside `PeftModelForCausalLM`, without the adapter name:
`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` ([r, in]) and `...lora_B.weight` ([out, r]).
Our decoder's module paths equal transformers', so the mapping is a fixed prefix and suffix, and
`peft.PeftModel.from_pretrained(hf_model, adapter_dir)` loads what we write (and we load what peft writes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tao_engine.atomic_dir import atomic_directory
from tao_engine.rl.lora import LoraConfig, apply_lora, is_merged, lora_config_of, lora_layers

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."

# peft options we do not implement: loading an adapter that uses one must fail, not silently differ.
_UNSUPPORTED_IF_SET = ("use_dora", "use_rslora", "fan_in_fan_out", "rank_pattern", "alpha_pattern",
                       "layers_to_transform", "modules_to_save", "layer_replication")


def peft_key(module_name: str, matrix: str) -> str:
    """`model.layers.0.self_attn.q_proj`, "A" -> `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`."""
    return f"{PEFT_PREFIX}{module_name}.lora_{matrix}.weight"


def lora_state_dict(model: nn.Module, full_state: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapters under peft's key names (what `adapter_model.safetensors` holds), detached, not copied; taken
    from `full_state` (the model's state dict gathered elsewhere, e.g. from FSDP2 shards) when given."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("lora_state_dict: the model has no LoRA layers; call apply_lora(model, config) first")
    state = {}
    for name, layer in layers.items():
        for matrix in ("A", "B"):
            source = getattr(layer, f"lora_{matrix}") if full_state is None else full_state[f"{name}.lora_{matrix}"]
            state[peft_key(name, matrix)] = source.detach()
    return state


def peft_adapter_config(config: LoraConfig, base_model_name_or_path: str | None) -> dict[str, Any]:
    alpha = int(config.alpha) if float(config.alpha).is_integer() else config.alpha
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "r": config.r,
        "lora_alpha": alpha,
        "lora_dropout": config.dropout,
        "target_modules": list(config.target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def save_lora_adapter(model: nn.Module, out_dir: str | Path, base_model_name_or_path: str | None = None,
                      state: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write the model's adapters to `out_dir` in peft's format, atomically (works merged or not). state: the
    model's full state dict gathered elsewhere (a sharded model's), read instead of its parameters."""
    config = lora_config_of(model)
    state = {k: v.to("cpu").contiguous() for k, v in lora_state_dict(model, state).items()}
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        body = peft_adapter_config(config, base_model_name_or_path)
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        save_file(state, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return out_dir.resolve()


def read_adapter_config(adapter_dir: str | Path) -> LoraConfig:
    """Parse a peft `adapter_config.json` into a LoraConfig; options we do not implement are errors."""
    path = Path(adapter_dir) / ADAPTER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a LoRA adapter directory needs {ADAPTER_CONFIG}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc
    if raw.get("peft_type") != "LORA":
        raise ValueError(f"{path}: peft_type is {raw.get('peft_type')!r}; only 'LORA' adapters are supported")
    used = [key for key in _UNSUPPORTED_IF_SET if raw.get(key)]
    if raw.get("bias", "none") != "none":
        used.append("bias")
    if used:
        raise ValueError(f"{path}: uses peft options {used}, which tao_engine's LoRA does not implement")
    try:
        return LoraConfig(
            r=raw.get("r"),
            alpha=raw.get("lora_alpha"),
            dropout=raw.get("lora_dropout", 0.0),
            target_modules=tuple(raw["target_modules"]) if isinstance(raw.get("target_modules"), list)
            else raw.get("target_modules"),
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def load_lora_adapter(
    model: nn.Module, adapter_dir: str | Path,
    place: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> nn.Module:
    """Load a peft LoRA adapter into `model`, in place: applies LoRA first if the model has none, else requires the
    same rank, alpha and targets. Every adapter tensor must be present with its shape. place(param, full): how a
    full tensor becomes the parameter's own form (a sharded model's shard). Returns `model`."""
    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir)
    if lora_layers(model):
        if is_merged(model):
            raise ValueError("load_lora_adapter: the model's LoRA is merged; call unmerge_lora(model) first")
        have = lora_config_of(model)
        if (have.r, have.alpha, set(have.target_modules)) != (config.r, config.alpha, set(config.target_modules)):
            raise ValueError(
                f"load_lora_adapter: {adapter_dir} has r={config.r}, alpha={config.alpha}, "
                f"targets={list(config.target_modules)} but the model's LoRA has r={have.r}, alpha={have.alpha}, "
                f"targets={list(have.target_modules)}; build the model with the adapter's settings"
            )
    else:
        apply_lora(model, config)
    path = adapter_dir / ADAPTER_WEIGHTS
    try:
        tensors = load_file(str(path))
    except (FileNotFoundError, SafetensorError) as exc:
        raise ValueError(f"{path}: cannot read the adapter weights ({exc})") from exc
    params = {}
    for name, layer in lora_layers(model).items():
        params[peft_key(name, "A")] = layer.lora_A
        params[peft_key(name, "B")] = layer.lora_B
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"{path}: does not match the model's LoRA layers: missing {missing[:4]}, unexpected {unexpected[:4]} "
            "(is it an adapter for this architecture?)"
        )
    with torch.no_grad():
        for key, param in params.items():
            if tensors[key].shape != param.shape:
                raise ValueError(f"{path}: {key} has shape {tuple(tensors[key].shape)}, expected {tuple(param.shape)}")
            param.copy_(tensors[key] if place is None else place(param, tensors[key]))
    return model
