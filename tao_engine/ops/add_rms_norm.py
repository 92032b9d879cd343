"""Residual add fused into the RMSNorm that follows it, the step between every pair of sublayers of a pre-norm decoder.

x, residual [..., H] (one dtype), weight [H] -> (rms_norm(x + residual, weight, eps), x + residual): the sum is
rounded to x's dtype, as the model's residual stream holds it, and is what the norm normalises. The decoder passes the
sum on as the next residual (vLLM's fused_add_rms_norm, here without mutating its inputs, so it also trains). The
`cpp` backend (csrc/cpu/rms_norm.cpp) reads x and residual once and writes both outputs in one pass per row.
"""

from __future__ import annotations

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


# --- cpp backend (csrc/cpu/rms_norm.cpp), with a fake kernel and an autograd formula (ops/_C_registrations_layers.py).
from tao_engine.ops.extension import cpu_backend_probe  # noqa: E402
from tao_engine.ops.rms_norm import cpp_norm_supports  # noqa: E402


def _add_rms_norm_cpp(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ops.tao_engine.add_rms_norm(x, residual, weight, float(eps))


def _add_rms_norm_cpp_supports(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[bool, str]:
    if residual.shape != x.shape or residual.dtype != x.dtype or residual.device != x.device:
        return False, f"residual must have x's shape, dtype and device, got {tuple(residual.shape)} {residual.dtype}"
    return cpp_norm_supports(x, weight)


add_rms_norm.register("cpp", _add_rms_norm_cpp, cpu_backend_probe, _add_rms_norm_cpp_supports)
