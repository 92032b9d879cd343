"""Residual add fused into the RMSNorm that follows it, the step between every pair of sublayers of a pre-norm decoder.

x, residual [..., H] (one dtype), weight [H] -> (rms_norm(x + residual, weight, eps), x + residual): the sum is
rounded to x's dtype, as the model's residual stream holds it, and is what the norm normalises. The decoder passes the
sum on as the next residual (vLLM's fused_add_rms_norm, here without mutating its inputs, so it also trains). The
`cpp` backend (csrc/cpu/rms_norm.cpp) reads x and residual once and writes both outputs in one pass per row.
"""

from __future__ import annotations

from typing import Any

import torch

from tao_engine.ops.registry import define_op
from tao_engine.ops.rms_norm import rms_norm_reference


def add_rms_norm_reference(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    # [..., H] x 2 -> ([..., H] in weight * x's promoted dtype, [..., H] in x's dtype)
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError(
            f"add_rms_norm: residual must have x's shape and dtype, got {tuple(residual.shape)} {residual.dtype} for "
            f"x {tuple(x.shape)} {x.dtype}"
        )
    summed = x + residual
    return rms_norm_reference(summed, weight, eps), summed


add_rms_norm = define_op("add_rms_norm", add_rms_norm_reference)


# --- cpp backend (csrc/cpu/rms_norm.cpp), with a fake kernel and an autograd formula (below).
from tao_engine.ops.extension import cpu_backend_probe  # noqa: E402
from tao_engine.ops.rms_norm import cpp_norm_supports, norm_out_dtype  # noqa: E402


def _add_rms_norm_cpp(a: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ops.tao_engine.add_rms_norm(a.x, a.residual, a.weight, float(a.eps))


def _add_rms_norm_cpp_supports(a: Any) -> tuple[bool, str]:
    x, residual = a.x, a.residual
    if residual.shape != x.shape or residual.dtype != x.dtype or residual.device != x.device:
        return False, f"residual must have x's shape, dtype and device, got {tuple(residual.shape)} {residual.dtype}"
    return cpp_norm_supports(x, a.weight)


add_rms_norm.register("cpp", _add_rms_norm_cpp, cpu_backend_probe, _add_rms_norm_cpp_supports)


# --- fake kernel and autograd formula of the compiled op (applied when `_C` loads); the backward is rms_norm's
# backward kernel with the gradient arriving at the summed output added (ops/rms_norm.py).
def _add_rms_norm_fake(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape, dtype=norm_out_dtype(x, weight)), x.new_empty(x.shape)  # out, summed [..., H]


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


add_rms_norm.register_compiled(
    "tao_engine::add_rms_norm", _add_rms_norm_fake, _add_rms_norm_backward, _add_rms_norm_setup_context
)
