"""Rotary position embedding: inverse frequencies from the model config, cos/sin computed per forward from positions.

There is no [max_positions, head_dim] table: Llama 3 allows 131072 positions, and a table would be a large buffer that
a meta-device construction could not materialise. cos/sin for the tokens of one forward cost [num_tokens, head_dim].

Supported `rope_scaling` types follow transformers' `modeling_rope_utils` (`default`, `linear`, `llama3`); the
inverse frequencies are computed in the same order of fp32 operations so that they agree bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")

# Keys each rope type needs besides `rope_type` (and their defaults, None meaning required).
_ROPE_KEYS: dict[str, dict[str, Any]] = {
    "default": {},
    "linear": {"factor": None},
    "llama3": {
        "factor": None,
        "low_freq_factor": None,
        "high_freq_factor": None,
        "original_max_position_embeddings": None,
    },
}
# Keys that may appear in a rope dict and carry no meaning for the supported types.
_IGNORED_ROPE_KEYS = ("type", "rope_type", "rope_theta", "partial_rotary_factor")


def normalize_rope_scaling(
    rope_scaling: dict[str, Any] | None, max_position_embeddings: int | None = None
) -> dict[str, Any] | None:
    """Validate a `rope_scaling` dict (old `type` or new `rope_type` key) and return its canonical form.

    Returns None for plain RoPE, else `{"rope_type": ..., <parameters>}` without `rope_theta`. Raises ValueError for
    unsupported types or missing parameters. `original_max_position_embeddings` defaults to
    `max_position_embeddings` for llama3, as transformers does.
    """
    if rope_scaling is None:
        return None
    if not isinstance(rope_scaling, dict):
        raise ValueError(f"rope_scaling must be a dict or None, got {type(rope_scaling).__name__}")
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(
            f"rope_scaling: unsupported rope type {rope_type!r}; supported types are {SUPPORTED_ROPE_TYPES}"
        )
    factor = rope_scaling.get("partial_rotary_factor", 1.0)
    if factor is not None and float(factor) != 1.0:
        raise ValueError(f"rope_scaling: partial_rotary_factor={factor} is not supported (only 1.0)")
    if rope_type == "default":
        return None
    out: dict[str, Any] = {"rope_type": rope_type}
    for key, default in _ROPE_KEYS[rope_type].items():
        value = rope_scaling.get(key, default)
        if value is None and key == "original_max_position_embeddings":
            value = max_position_embeddings
        if value is None:
            raise ValueError(f"rope_scaling: rope type {rope_type!r} requires key {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"rope_scaling: {key!r} must be a positive number, got {value!r}")
        out[key] = value
    if rope_type == "llama3" and out["high_freq_factor"] <= out["low_freq_factor"]:
        raise ValueError("rope_scaling: llama3 requires high_freq_factor > low_freq_factor")
    # Unknown extra keys are kept (transformers keeps them too) so a config round trip loses nothing.
    for key, value in rope_scaling.items():
        if key not in out and key not in _IGNORED_ROPE_KEYS:
            out[key] = value
    return out


def compute_inv_freq(head_dim: int, rope_theta: float, rope_scaling: dict[str, Any] | None) -> torch.Tensor:
    """Inverse frequencies [head_dim // 2] fp32 on CPU, as transformers' ROPE_INIT_FUNCTIONS compute them."""
    scaling = normalize_rope_scaling(rope_scaling)
    # Explicit device: this must be a real tensor even under `with torch.device("meta"):`.
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").to(torch.float32) / head_dim
    inv_freq = 1.0 / (rope_theta**exponents)
    if scaling is None:
        return inv_freq
    if scaling["rope_type"] == "linear":
        return inv_freq / scaling["factor"]
    # llama3: long wavelengths are slowed by `factor`, short ones kept, the band between interpolated smoothly.
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_context = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context / low
    high_freq_wavelen = old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Maps token positions [N] to (cos, sin), each [N, head_dim] fp32, in the rotate-half layout.

    Holds no parameters and no buffers: the inverse frequencies are a plain CPU tensor computed at construction
    (also under a meta-device context) and copied once to each device they are used on.
    """

    def __init__(self, head_dim: int, rope_theta: float, rope_scaling: dict[str, Any] | None = None) -> None:
        super().__init__()
        if head_dim <= 0 or head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be a positive even number, got {head_dim}")
        if rope_theta <= 0:
            raise ValueError(f"RotaryEmbedding: rope_theta must be positive, got {rope_theta}")
        self.head_dim = head_dim
        self.rope_theta = float(rope_theta)
        self.rope_scaling = normalize_rope_scaling(rope_scaling)
        self.inv_freq = compute_inv_freq(head_dim, self.rope_theta, self.rope_scaling)  # [D/2] fp32, CPU
        self._inv_freq_on: dict[torch.device, torch.Tensor] = {self.inv_freq.device: self.inv_freq}

    def _inv_freq_for(self, device: torch.device) -> torch.Tensor:
        cached = self._inv_freq_on.get(device)
        if cached is None:
            cached = self.inv_freq.to(device)
            self._inv_freq_on[device] = cached
        return cached

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if positions.dim() != 1:
            raise ValueError(f"RotaryEmbedding: positions must be 1-D [num_tokens], got {tuple(positions.shape)}")
        inv_freq = self._inv_freq_for(positions.device)
        freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # [N, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [N, D]: both halves share the frequencies (rotate-half layout)
        return emb.cos(), emb.sin()

    def extra_repr(self) -> str:
        kind = self.rope_scaling["rope_type"] if self.rope_scaling else "default"
        return f"head_dim={self.head_dim}, rope_theta={self.rope_theta}, rope_type={kind}"
