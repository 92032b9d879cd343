"""Rotary position embedding in the "rotate half" (GPT-NeoX / HF Llama) layout.

cos and sin are [num_tokens, head_dim] (the two halves repeated), computed once per forward by
`layers.rotary.RotaryEmbedding` and shared by every layer.
The `cpp` backend (csrc/cpu/rotary.cpp) rotates q and k in one pass per token, in fp32, without the reference's
concatenated rotate_half temporaries or the cast of cos/sin to q's dtype; its backward is the adjoint rotation.
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


# --- cpp backend (csrc/cpu/rotary.cpp), with a fake kernel and an autograd formula (ops/_C_registrations_layers.py).
from tao_engine.ops.extension import cpu_backend_probe  # noqa: E402

_CPP_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _apply_rotary_cpp(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ops.tao_engine.apply_rotary(q, k, cos, sin)


def _apply_rotary_cpp_supports(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[bool, str]:
    if any(t.device.type != "cpu" for t in (q, k, cos, sin)):
        return False, "q, k, cos and sin must be CPU tensors"
    if q.dtype not in _CPP_DTYPES or k.dtype != q.dtype:
        return False, f"q and k must share one of float32, bfloat16, float16; got {q.dtype} and {k.dtype}"
    if cos.dtype != torch.float32 or sin.dtype != torch.float32:
        return False, f"cos and sin must be float32 (RotaryEmbedding's output), got {cos.dtype} and {sin.dtype}"
    if cos.requires_grad or sin.requires_grad:
        return False, "the cpp backend gives no gradient for cos and sin"
    n, d = q.shape[0] if q.dim() else -1, q.shape[-1] if q.dim() else -1
    if q.dim() != 3 or k.dim() != 3 or k.shape[0] != n or k.shape[2] != d or d % 2:
        return False, f"q must be [N, Hq, D] and k [N, Hkv, D] with an even D; got {tuple(q.shape)}, {tuple(k.shape)}"
    if cos.shape != (n, d) or sin.shape != (n, d):
        return False, f"cos and sin must be [N, D] = [{n}, {d}], got {tuple(cos.shape)} and {tuple(sin.shape)}"
    return True, ""


apply_rotary.register("cpp", _apply_rotary_cpp, cpu_backend_probe, _apply_rotary_cpp_supports)
