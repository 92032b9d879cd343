"""LoRA on the decoder's linear layers, in place, so the engine keeps sampling from the very module being trained.

`apply_lora` swaps each targeted `nn.Linear` for a `LoraLinear` that holds the same `weight`/`bias` Parameters
(frozen) plus `lora_A` [r, in] and `lora_B` [out, r]: y = x W^T + b + (alpha / r) * dropout(x) A^T B^T. B starts at
zero, so the model's outputs are unchanged at init. Base parameter names stay the HF ones; the adapters add
`<module>.lora_A` / `<module>.lora_B`, which `merge_lora` folds into the weights (and hides from the state dict)
and `unmerge_lora` takes back out. Adapters are kept in float32 whatever the base dtype (as peft does by default):
bf16 adapters would lose most small optimizer updates.

Saving and loading in peft's format live in `tao_engine.rl.lora_adapter`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tao_engine.config_dict import dataclass_from_dict

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_DTYPE = torch.float32


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters on the linear layers; the base weights stay frozen (and are the KL reference)."""

    r: int = 16  # adapter rank
    alpha: float = 32.0  # the adapter's update is scaled by alpha / r
    dropout: float = 0.0  # on the adapter's input, training only
    target_modules: tuple[str, ...] = LORA_TARGETS  # linear layers to adapt: a list, or "all-linear"

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"LoraConfig.r must be a positive integer (the adapter rank), got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            raise ValueError(f"LoraConfig.alpha must be a positive number (scale = alpha / r), got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"LoraConfig.dropout must be in [0, 1), got {self.dropout!r}")
        targets = self.target_modules
        if targets == "all-linear":
            targets = LORA_TARGETS
        if isinstance(targets, str) or not all(isinstance(t, str) for t in targets):
            raise ValueError(
                f"LoraConfig.target_modules must be a list of module names (or 'all-linear'), got {targets!r}"
            )
        targets = tuple(dict.fromkeys(targets))  # ordered, duplicates dropped
        unknown = [t for t in targets if t not in LORA_TARGETS]
        if unknown or not targets:
            raise ValueError(
                f"LoraConfig.target_modules: {unknown or 'empty'} not supported; choose among {list(LORA_TARGETS)}"
            )
        object.__setattr__(self, "target_modules", targets)

    @property
    def scale(self) -> float:
        return self.alpha / self.r

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoraConfig:
        return dataclass_from_dict(cls, d)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"target_modules": list(self.target_modules)}


class LoraLinear(nn.Module):
    """An `nn.Linear` (its own Parameters, frozen) plus a trainable low-rank update; see the module docstring."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.scale = alpha / r
        self.merged = False
        self.disabled = False  # set by `lora_disabled`: the base model's output (a KL reference for free)
        self.weight = base.weight.requires_grad_(False)  # the same Parameter object: no copy of the base weight
        self.bias = None if base.bias is None else base.bias.requires_grad_(False)
        device = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, dtype=ADAPTER_DTYPE, device=device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, dtype=ADAPTER_DTYPE, device=device))
        # nn.Linear's own init for A (kaiming-uniform, a=sqrt(5)); B = 0 keeps the output unchanged.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=generator)
        self.register_state_dict_post_hook(_hide_merged_adapters)
        self.train(base.training)  # a new module starts in training mode: follow the model's (eval: no dropout)

    def delta_weight(self) -> torch.Tensor:
        """scale * B @ A: [out, in], float32."""
        return (self.lora_B @ self.lora_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)  # [..., out]
        if self.merged or self.disabled:
            return out
        h = x.to(ADAPTER_DTYPE)
        if self.dropout > 0 and self.training:
            h = F.dropout(h, self.dropout, training=True)
        # [..., in] -> [..., r] -> [..., out]: two thin matmuls, never the [out, in] delta.
        return out + (F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scale).to(out.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            raise ValueError("LoraLinear.merge: already merged; call unmerge_lora first")
        self.weight += self.delta_weight().to(self.weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            raise ValueError("LoraLinear.unmerge: not merged; call merge_lora first")
        self.weight -= self.delta_weight().to(self.weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"r={self.r}, alpha={self.alpha}, dropout={self.dropout}, merged={self.merged}")


def _hide_merged_adapters(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    # A merged model's state dict is the plain HF one (save_pretrained writes a normal model). Module-level, so the
    # model still pickles.
    if module.merged:
        state_dict.pop(prefix + "lora_A", None)
        state_dict.pop(prefix + "lora_B", None)


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    """Module name -> LoraLinear, in module order (empty when LoRA is not applied)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}


def has_lora(model: nn.Module) -> bool:
    return bool(lora_layers(model))


def _require_lora(model: nn.Module, what: str) -> dict[str, LoraLinear]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"{what}: the model has no LoRA layers; call apply_lora(model, config) first")
    return layers


def apply_lora(model: nn.Module, config: LoraConfig, generator: torch.Generator | None = None) -> nn.Module:
    """Freeze every parameter of `model` and wrap its targeted linear layers in `LoraLinear`, in place.

    Only the adapters (lora_A, lora_B) are trainable afterwards. `generator` seeds A's init. Returns `model`.
    """
    if not isinstance(config, LoraConfig):
        raise TypeError(f"apply_lora: config must be a LoraConfig, got {type(config).__name__}")
    if has_lora(model):
        raise ValueError("apply_lora: the model already has LoRA layers; apply it once (or load_lora_adapter)")
    targets = [
        (name, m) for name, m in model.named_modules()
        if type(m) is nn.Linear and name.rsplit(".", 1)[-1] in config.target_modules
    ]
    if not targets:
        raise ValueError(f"apply_lora: no nn.Linear named {list(config.target_modules)} found in the model")
    model.requires_grad_(False)
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoraLinear(linear, config.r, config.alpha, config.dropout, generator))
    return model


def lora_config_of(model: nn.Module) -> LoraConfig:
    """The LoraConfig the model's LoRA layers were built with (they must all agree)."""
    layers = _require_lora(model, "lora_config_of")
    settings = {(m.r, m.alpha, m.dropout) for m in layers.values()}
    if len(settings) != 1:
        raise ValueError(f"lora_config_of: LoRA layers disagree on (r, alpha, dropout): {sorted(settings)}")
    r, alpha, dropout = settings.pop()
    suffixes = {name.rsplit(".", 1)[-1] for name in layers}
    return LoraConfig(r=r, alpha=alpha, dropout=dropout, target_modules=tuple(t for t in LORA_TARGETS if t in suffixes))


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W += scale * B A), in place.

    The merged model runs at the base model's cost and its state dict holds exactly the HF names, so
    `save_pretrained` writes a normal model. The adapters are kept: `unmerge_lora` subtracts them again (exact up to
    one rounding of W per merge/unmerge cycle; in bf16 prefer training unmerged).
    """
    for layer in _require_lora(model, "merge_lora").values():
        layer.merge()
    return model


def merged_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` (the model's full state dict with adapters, e.g. gathered from FSDP2 shards) with every adapter folded
    into its base weight as `merge_lora` folds it, under the plain HF names; the model itself is not touched."""
    layers = _require_lora(model, "merged_state_dict")
    out = dict(state)
    for name, layer in layers.items():
        a, b = out.pop(f"{name}.lora_A"), out.pop(f"{name}.lora_B")
        weight = out[f"{name}.weight"]
        out[f"{name}.weight"] = weight + ((b @ a) * layer.scale).to(weight.dtype)  # delta_weight's formula
    return out


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo `merge_lora` (W -= scale * B A); the adapters are back in the forward and the state dict."""
    for layer in _require_lora(model, "unmerge_lora").values():
        layer.unmerge()
    return model


def is_merged(model: nn.Module) -> bool:
    layers = _require_lora(model, "is_merged")
    states = {m.merged for m in layers.values()}
    if len(states) != 1:
        raise ValueError("is_merged: some LoRA layers are merged and others not")
    return states.pop()


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block the model computes the base model's outputs (adapters bypassed, not removed): the KL
    reference of a LoRA run costs no second copy of the weights."""
    layers = _require_lora(model, "lora_disabled")
    if any(m.merged for m in layers.values()):
        raise ValueError("lora_disabled: the adapters are merged into the weights; call unmerge_lora(model) first")
    previous = {name: m.disabled for name, m in layers.items()}
    for m in layers.values():
        m.disabled = True
    try:
        yield model
    finally:
        for name, m in layers.items():
            m.disabled = previous[name]
