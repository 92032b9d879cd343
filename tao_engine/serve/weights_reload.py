"""Swap a checkpoint's weights into the module the engine already runs, in place.

The engine, its KV cache and any trainer keep their references to the same `nn.Module`; only the tensor values
change. The checkpoint is read and checked (same architecture, same tensor names and shapes) before anything is
copied, so a bad directory leaves the served model untouched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from tao_engine.models.loading import load_model, read_config

# Config fields that do not change the forward pass or the tensor shapes.
_FREE_FIELDS = {"dtype", "extra", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id"}


def read_replacement_weights(model: nn.Module, model_dir: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of `model_dir`, in `model`'s dtype and on its device, checked to fit `model` exactly."""
    new_config = read_config(model_dir)
    old, new = dataclasses.asdict(model.config), dataclasses.asdict(new_config)
    differing = sorted(k for k in old if k not in _FREE_FIELDS and old[k] != new.get(k))
    if differing:
        shown = ", ".join(f"{k}: {old[k]!r} -> {new.get(k)!r}" for k in differing[:6])
        raise ValueError(f"reload {model_dir}: a different architecture than the served model ({shown}); "
                         "a reload only swaps weights of the same shape: restart the server to change models")
    weight = next(model.parameters())
    state = load_model(model_dir, dtype=weight.dtype, device=weight.device).state_dict()
    current = model.state_dict()
    if set(state) != set(current):
        missing, extra = sorted(set(current) - set(state)), sorted(set(state) - set(current))
        raise ValueError(f"reload {model_dir}: tensor names differ (missing {missing[:5]}, unexpected {extra[:5]})")
    for name, tensor in state.items():
        if tensor.shape != current[name].shape:
            raise ValueError(f"reload {model_dir}: {name} has shape {tuple(tensor.shape)}, the served model "
                             f"{tuple(current[name].shape)}")
    return state


@torch.no_grad()
def copy_weights_(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into `model`'s own tensors (state_dict() views share their storage)."""
    current = model.state_dict()
    for name, tensor in state.items():
        current[name].copy_(tensor)
