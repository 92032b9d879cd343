"""Rotary position embedding in the "rotate half" (GPT-NeoX / HF Llama) layout.

cos and sin are [num_tokens, head_dim] (the two halves repeated), computed once per forward by
`layers.rotary.RotaryEmbedding` and shared by every layer.
The `cpp` backend (csrc/cpu/rotary.cpp) rotates q and k in one pass per token, in fp32, without the reference's
concatenated rotate_half temporaries or the cast of cos/sin to q's dtype; its backward is the adjoint rotation.
"""

from __future__ import annotations

from typing import Any

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


# --- cpp backend (csrc/cpu/rotary.cpp), with a fake kernel and an autograd formula (below).
from tao_engine.ops.extension import cpu_backend_probe  # noqa: E402

_CPP_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _apply_rotary_cpp(a: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ops.tao_engine.apply_rotary(a.q, a.k, a.cos, a.sin)


def _apply_rotary_cpp_supports(a: Any) -> tuple[bool, str]:
    q, k, cos, sin = a
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


# --- fake kernel and autograd formula of the compiled op, applied when `_C` loads (ops/extension.py). A rotation per
# token and frequency, so the backward is the transposed rotation of the gradients (the same kernel with
# transpose=True). cos and sin get no gradient (supports() refuses them then).
def _apply_rotary_fake(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, transpose: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    torch._check_value(
        q.dim() == 3 and k.dim() == 3 and cos.dim() == 2,
        lambda: f"apply_rotary: q and k must be [N, H, D] and cos [N, D], got {tuple(q.shape)}, {tuple(k.shape)}",
    )
    return q.new_empty(q.shape), k.new_empty(k.shape)  # contiguous [N, Hq, D], [N, Hkv, D]


def _apply_rotary_setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
    _, _, cos, sin, transpose = inputs
    ctx.save_for_backward(cos, sin)
    ctx.transpose = transpose
    ctx.shapes = tuple((t.shape, t.dtype) for t in output)  # for an output that takes no part in the loss


def _apply_rotary_backward(
    ctx: Any, grad_q: torch.Tensor | None, grad_k: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
    cos, sin = ctx.saved_tensors
    # An output that took no part in the loss has no gradient: rotate zeros in its place (the kernel takes both).
    (q_shape, q_dtype), (k_shape, k_dtype) = ctx.shapes
    if grad_q is None:
        grad_q = torch.zeros(q_shape, dtype=q_dtype, device=cos.device)
    if grad_k is None:
        grad_k = torch.zeros(k_shape, dtype=k_dtype, device=cos.device)
    grads = torch.ops.tao_engine.apply_rotary(grad_q, grad_k, cos, sin, not ctx.transpose)
    need_q, need_k = ctx.needs_input_grad[:2]
    return (grads[0] if need_q else None), (grads[1] if need_k else None), None, None, None


apply_rotary.register_compiled(
    "tao_engine::apply_rotary", _apply_rotary_fake, _apply_rotary_backward, _apply_rotary_setup_context
)
