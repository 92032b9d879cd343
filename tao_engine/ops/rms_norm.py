"""RMSNorm: y = w * x / sqrt(mean(x^2) + eps), statistics in fp32, result in the input dtype (as HF Llama does)."""

from __future__ import annotations

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


def _rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return triton_support.kernel_module("rms_norm").rms_norm(x, weight, eps)


def _rms_norm_triton_supports(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[bool, str]:
    for ok, why in (
        triton_support.device_supported(x, weight),
        triton_support.dtype_supported("x", x, _TRITON_DTYPES),
        triton_support.dtype_supported("weight", weight, _TRITON_DTYPES),
    ):
        if not ok:
            return ok, why
    if weight.dim() != 1 or x.dim() == 0 or x.shape[-1] != weight.shape[0]:
        return False, f"weight must be [H] with H = x.shape[-1]; got x {tuple(x.shape)}, weight {tuple(weight.shape)}"
    max_hidden = triton_support.kernel_module("rms_norm").MAX_HIDDEN
    if x.shape[-1] > max_hidden:
        return False, f"hidden size {x.shape[-1]} is over the kernel's limit of {max_hidden} (one row per program)"
    return True, ""


rms_norm.register("triton", _rms_norm_triton, triton_support.triton_probe, _rms_norm_triton_supports)
