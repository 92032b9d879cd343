"""Rotary position embedding in the "rotate half" (GPT-NeoX / HF Llama) layout.

cos and sin are [num_tokens, head_dim] (the two halves repeated), computed once per forward by
`layers.rotary.RotaryEmbedding` and shared by every layer.
"""

from __future__ import annotations

import torch

from tao_engine.ops.registry import define_op


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary_reference(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    # q [N, Hq, D], k [N, Hkv, D], cos/sin [N, D] -> rotated q, k (new tensors, inputs untouched)
    cos = cos.to(q.dtype).unsqueeze(1)  # [N, 1, D]
    sin = sin.to(q.dtype).unsqueeze(1)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


apply_rotary = define_op("apply_rotary", apply_rotary_reference)
