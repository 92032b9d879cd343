"""Fake kernels and autograd formulas of the compiled layer ops: rms_norm, add_rms_norm, silu_and_mul, apply_rotary
(csrc/cpu/rms_norm.cpp, activation.cpp, rotary.cpp). Imported by `_C_registrations` once `_C` has loaded.

Every formula is the exact derivative of the op's fp32 math; the roundings to a half dtype inside the forward pass
the gradient through unchanged, as autograd does for the reference's casts.
"""

from __future__ import annotations

from typing import Any

import torch


def _norm_out_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    return torch.float32 if weight.dtype == torch.float32 else x.dtype


# --- rms_norm and add_rms_norm: one backward kernel, rms_norm_backward(grad_out, x, weight, eps, grad_add), gives
# grad_x (plus grad_add: the gradient arriving at add_rms_norm's summed output) and grad_weight.
@torch.library.register_fake("tao_engine::rms_norm")
def _rms_norm_fake(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x.new_empty(x.shape, dtype=_norm_out_dtype(x, weight))  # [..., H], contiguous


@torch.library.register_fake("tao_engine::add_rms_norm")
def _add_rms_norm_fake(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape, dtype=_norm_out_dtype(x, weight)), x.new_empty(x.shape)  # out, summed [..., H]


@torch.library.register_fake("tao_engine::rms_norm_backward")
def _rms_norm_backward_fake(
    grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, eps: float, grad_add: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape), weight.new_empty(weight.shape)  # grad_x [..., H], grad_weight [H]


def _rms_norm_setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    x, weight, eps = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps = eps


def _rms_norm_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
    x, weight = ctx.saved_tensors
    grad_x, grad_weight = torch.ops.tao_engine.rms_norm_backward(grad, x, weight, ctx.eps, None)
    return (grad_x if ctx.needs_input_grad[0] else None), (grad_weight if ctx.needs_input_grad[1] else None), None


torch.library.register_autograd("tao_engine::rms_norm", _rms_norm_backward, setup_context=_rms_norm_setup_context)


def _add_rms_norm_setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
    _, _, weight, eps = inputs
    out, summed = output
    ctx.save_for_backward(summed, weight)  # the norm's input: the backward needs nothing else
    ctx.eps, ctx.out_dtype = eps, out.dtype


def _add_rms_norm_backward(
    ctx: Any, grad_out: torch.Tensor | None, grad_summed: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
    summed, weight = ctx.saved_tensors
    if grad_out is None:  # only the sum was used: the add passes its gradient to both inputs
        grad_out = summed.new_zeros(summed.shape, dtype=ctx.out_dtype)
    grad_x, grad_weight = torch.ops.tao_engine.rms_norm_backward(grad_out, summed, weight, ctx.eps, grad_summed)
    need_x, need_residual, need_weight = ctx.needs_input_grad[:3]
    return (grad_x if need_x else None), (grad_x if need_residual else None), (
        grad_weight if need_weight else None), None


torch.library.register_autograd(
    "tao_engine::add_rms_norm", _add_rms_norm_backward, setup_context=_add_rms_norm_setup_context
)


# --- silu_and_mul
@torch.library.register_fake("tao_engine::silu_and_mul")
def _silu_and_mul_fake(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    torch._check_value(gate.shape == up.shape, lambda: "silu_and_mul: gate and up must have one shape")
    return gate.new_empty(gate.shape)


@torch.library.register_fake("tao_engine::silu_and_mul_backward")
def _silu_and_mul_backward_fake(
    grad_out: torch.Tensor, gate: torch.Tensor, up: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return gate.new_empty(gate.shape), gate.new_empty(gate.shape)


def _silu_and_mul_setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _silu_and_mul_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    gate, up = ctx.saved_tensors
    grad_gate, grad_up = torch.ops.tao_engine.silu_and_mul_backward(grad, gate, up)
    return (grad_gate if ctx.needs_input_grad[0] else None), (grad_up if ctx.needs_input_grad[1] else None)


torch.library.register_autograd(
    "tao_engine::silu_and_mul", _silu_and_mul_backward, setup_context=_silu_and_mul_setup_context
)


# --- apply_rotary: a rotation per token and frequency, so the backward is the transposed rotation of the gradients
# (the same kernel with transpose=True). cos and sin get no gradient (the backend's supports() refuses them then).
@torch.library.register_fake("tao_engine::apply_rotary")
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


torch.library.register_autograd(
    "tao_engine::apply_rotary", _apply_rotary_backward, setup_context=_apply_rotary_setup_context
)
