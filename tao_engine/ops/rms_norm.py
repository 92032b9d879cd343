"""RMSNorm: y = w * x / sqrt(mean(x^2) + eps), statistics in fp32, result in the input dtype (as HF Llama does).

x [..., H], weight [H] -> [..., H] in the dtype of `weight * x` (torch's promotion: fp32 for an fp32 weight under
bf16 autocast activations). Backends: `cpp` (csrc/cpu/rms_norm.cpp: one pass per row, fp32 in registers, with an
autograd formula) and `triton` (kernels/rms_norm.py).
"""

from __future__ import annotations

from typing import Any

import torch

from tao_engine.ops.registry import define_op


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # [..., H] -> [..., H]; the cast back to x.dtype happens before the weight multiply, matching transformers.
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


rms_norm = define_op("rms_norm", rms_norm_reference)


# --- triton backend (kernels/rms_norm.py); the kernel module is imported on first call, never at import time.
from tao_engine.ops import triton_support  # noqa: E402

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _rms_norm_triton(a: Any) -> torch.Tensor:
    return triton_support.kernel_module("rms_norm").rms_norm(a.x, a.weight, a.eps)


def _rms_norm_triton_supports(a: Any) -> tuple[bool, str]:
    for ok, why in (
        triton_support.device_supported(a.x, a.weight),
        triton_support.dtype_supported("x", a.x, _TRITON_DTYPES),
        triton_support.dtype_supported("weight", a.weight, _TRITON_DTYPES),
        _norm_shapes(a.x, a.weight),
    ):
        if not ok:
            return ok, why
    max_hidden = triton_support.kernel_module("rms_norm").MAX_HIDDEN
    if a.x.shape[-1] > max_hidden:
        return False, f"hidden size {a.x.shape[-1]} is over the kernel's limit of {max_hidden} (one row per program)"
    return True, ""


rms_norm.register("triton", _rms_norm_triton, triton_support.triton_probe, _rms_norm_triton_supports)


# --- cpp backend (csrc/cpu/rms_norm.cpp): `torch.ops.tao_engine.rms_norm` with a fake kernel and an autograd formula
# (below). The extension loads in the probe, on first use, never at import time.
from tao_engine.ops.extension import cpu_backend_probe  # noqa: E402

CPP_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _norm_shapes(x: torch.Tensor, weight: torch.Tensor) -> tuple[bool, str]:
    if weight.dim() != 1 or x.dim() == 0 or x.shape[-1] != weight.shape[0]:
        return False, f"weight must be [H] with H = x.shape[-1]; got x {tuple(x.shape)}, weight {tuple(weight.shape)}"
    return True, ""


def cpp_norm_supports(x: torch.Tensor, weight: torch.Tensor) -> tuple[bool, str]:
    """What the cpp kernels of rms_norm and add_rms_norm take: CPU tensors, x [..., H] in a float dtype, weight [H]
    in x's dtype or fp32."""
    if x.device.type != "cpu" or weight.device.type != "cpu":
        return False, f"x and weight must be CPU tensors, got {x.device} and {weight.device}"
    if x.dtype not in CPP_DTYPES:
        return False, f"x must be float32, bfloat16 or float16, got {x.dtype}"
    if weight.dtype not in (x.dtype, torch.float32):
        return False, f"weight must have x's dtype or float32, got {weight.dtype} for x {x.dtype}"
    return _norm_shapes(x, weight)


def _rms_norm_cpp(a: Any) -> torch.Tensor:
    return torch.ops.tao_engine.rms_norm(a.x, a.weight, float(a.eps))


rms_norm.register("cpp", _rms_norm_cpp, cpu_backend_probe, lambda a: cpp_norm_supports(a.x, a.weight))


# --- fake kernels and autograd formulas of the compiled rms_norm ops, applied when `_C` loads (ops/extension.py).
# One backward kernel, rms_norm_backward(grad_out, x, weight, eps, grad_add), gives grad_x (plus grad_add: the
# gradient arriving at add_rms_norm's summed output) and grad_weight. Every formula is the exact derivative of the
# op's fp32 math; the roundings to a half dtype pass the gradient through unchanged, as autograd does for casts.
def norm_out_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    return torch.float32 if weight.dtype == torch.float32 else x.dtype


def _rms_norm_fake(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x.new_empty(x.shape, dtype=norm_out_dtype(x, weight))  # [..., H], contiguous


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


rms_norm.register_compiled("tao_engine::rms_norm", _rms_norm_fake, _rms_norm_backward, _rms_norm_setup_context)
rms_norm.register_compiled("tao_engine::rms_norm_backward", _rms_norm_backward_fake)
