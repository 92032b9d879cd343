"""Token log-probabilities straight from the last hidden states and the LM head, without the [N, V] logits.

    linear_logprobs(hidden [N, H], weight [V, H], targets [N] int64, temperature=1.0, return_entropy=False)
        -> logprobs [N] fp32, or (logprobs [N] fp32, entropy [N] fp32) when return_entropy

with z = hidden @ weight.T / temperature in fp32: logprobs = log_softmax(z)[target] (clamped to <= 0, since a
probability above 1 must never reach a ratio downstream) and entropy = -sum p log p. Both are differentiable in
hidden and weight (the entropy serves as an entropy bonus); gradients come back in the inputs' dtypes.

The reference below builds the full logits and is the specification. The `cpp` backend (csrc/cpu/linear_logprobs.cpp)
and the `triton` backend (kernels/linear_logprobs.py) walk the vocabulary in blocks with an online log-sum-exp, keep
only [N] statistics for the backward and recompute each block's logits there: memory O(N * block) instead of
O(N * V), at the price of one more GEMM of hidden @ weight.T.

When the weight needs no gradient and hidden does (a frozen LM head, as under LoRA; SmolLM2's head is the tied
embedding), the `cpp` and `cuda` backends take `linear_logprobs_frozen_weight` instead (the `triton` backend does
the same in kernels/linear_logprobs.py): its forward also accumulates, per row,
E_p[W] = sum_v p_v W_v (and, with the entropy, Cov_p(z, W)) with one more GEMM per block, and the backward is then
elementwise, d logprob / d hidden = (W[target] - E_p[W]) / T and d entropy / d hidden = -Cov_p(z, W) / T: two GEMMs in
all, as the naive log_softmax(hidden @ weight.T) has, and still no [N, V] tensor.
"""

from __future__ import annotations

import math

import torch

from tao_engine.ops.registry import define_op

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_linear_logprobs_args(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float
) -> None:
    """Raise ValueError naming the argument and the fix; the compiled kernels raise the same errors. The range check
    of targets reads their min and max (one device sync for CUDA tensors)."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"linear_logprobs: temperature must be finite and > 0, got {temperature}")
    if hidden.dim() != 2:
        raise ValueError(
            f"linear_logprobs: hidden must be 2-D [N, H] (flatten batch and sequence dims first), got shape "
            f"{tuple(hidden.shape)}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[1] or weight.shape[0] == 0:
        raise ValueError(
            f"linear_logprobs: weight must be 2-D [V, H] with V > 0 and H = {hidden.shape[1]} (hidden.size(1)), got "
            f"shape {tuple(weight.shape)}"
        )
    if targets.dim() != 1 or targets.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"linear_logprobs: targets must be 1-D [N] with N = {hidden.shape[0]} (hidden.size(0)), got shape "
            f"{tuple(targets.shape)}"
        )
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"linear_logprobs: targets must be an integer tensor (token ids), got {targets.dtype}")
    if targets.numel() > 0:
        low, high = int(targets.min()), int(targets.max())
        if low < 0 or high >= weight.shape[0]:
            bad = low if low < 0 else high
            raise ValueError(
                f"linear_logprobs: target {bad} is out of range for a weight with V = {weight.shape[0]} rows "
                "(targets must be in [0, V))"
            )


def linear_logprobs_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    check_linear_logprobs_args(hidden, weight, targets, temperature)
    logits = hidden.float() @ weight.float().T / temperature  # [N, V] fp32
    logp = torch.log_softmax(logits, dim=-1)  # [N, V]
    logprobs = logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1).clamp(max=0.0)  # [N]
    if not return_entropy:
        return logprobs
    entropy = -(logp.exp() * logp).sum(-1)  # [N]
    return logprobs, entropy


linear_logprobs = define_op("linear_logprobs", linear_logprobs_reference)


def _supports(
    device_ok: tuple[bool, str], hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> tuple[bool, str]:
    if not device_ok[0]:
        return device_ok
    for name, t in (("hidden", hidden), ("weight", weight)):
        if t.dtype not in _FLOAT_DTYPES:
            return False, f"{name} must be float32, bfloat16 or float16, got {t.dtype}"
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        return False, f"targets must be an integer tensor, got {targets.dtype}"
    if hidden.dim() != 2 or weight.dim() != 2 or targets.dim() != 1:
        shapes = f"hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}, targets {tuple(targets.shape)}"
        return False, f"hidden must be 2-D [N, H], weight 2-D [V, H] and targets 1-D [N]; got {shapes}"
    return True, ""


# --- triton backend (kernels/linear_logprobs.py); the kernel module is imported on first call, never at import time.
from tao_engine.ops import triton_support  # noqa: E402


def _linear_logprobs_triton(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    check_linear_logprobs_args(hidden, weight, targets, temperature)
    kernels = triton_support.kernel_module("linear_logprobs")
    # With a frozen weight, Cov_p(z, W) (the entropy's gradient) costs a GEMM: only when the entropy is returned.
    logprobs, entropy = kernels.linear_logprobs(
        hidden, weight, targets.long(), float(temperature), entropy_grad=return_entropy
    )
    return (logprobs, entropy) if return_entropy else logprobs


def _linear_logprobs_triton_supports(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> tuple[bool, str]:
    return _supports(triton_support.device_supported(hidden, weight, targets), hidden, weight, targets)


linear_logprobs.register(
    "triton", _linear_logprobs_triton, triton_support.triton_probe, _linear_logprobs_triton_supports
)


# --- cpp backend (csrc/cpu/linear_logprobs.cpp, csrc/cpu/linear_logprobs_frozen_weight.cpp):
# `torch.ops.tao_engine.linear_logprobs` or `.linear_logprobs_frozen_weight`, with autograd formulas and fake kernels
# in ops/_C_registrations.py. The extension loads in the probe, on first use.
from tao_engine.ops.extension import cpu_backend_probe  # noqa: E402


def takes_frozen_weight_path(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the `cpp` and `cuda` backends run linear_logprobs_frozen_weight: its forward pays one more GEMM so
    that the backward needs none, which pays off only when hidden's gradient will be asked for and the weight's
    will not."""
    return torch.is_grad_enabled() and hidden.requires_grad and not weight.requires_grad


def _linear_logprobs_recomputing(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    # The op takes int64 targets; the reference accepts any integer dtype, so convert (a no-op for int64). The
    # third output, lse, is only for the backward.
    logprobs, entropy, _ = torch.ops.tao_engine.linear_logprobs(hidden, weight, targets.long(), float(temperature))
    return (logprobs, entropy) if return_entropy else logprobs


def _linear_logprobs_compiled(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    if not takes_frozen_weight_path(hidden, weight):
        return _linear_logprobs_recomputing(hidden, weight, targets, temperature, return_entropy)
    # Cov_p(z, W) costs a third GEMM: only when the entropy is returned (its gradient may then be asked for).
    logprobs, entropy, *_ = torch.ops.tao_engine.linear_logprobs_frozen_weight(
        hidden, weight, targets.long(), float(temperature), return_entropy
    )
    return (logprobs, entropy) if return_entropy else logprobs


def _linear_logprobs_cpp_supports(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> tuple[bool, str]:
    devices = {hidden.device.type, weight.device.type, targets.device.type}
    device_ok = (devices == {"cpu"}, f"hidden, weight and targets must be CPU tensors, got {sorted(devices)}")
    return _supports(device_ok, hidden, weight, targets)


linear_logprobs.register("cpp", _linear_logprobs_compiled, cpu_backend_probe, _linear_logprobs_cpp_supports)


# --- cuda backend (csrc/cuda/linear_logprobs*.{cu,cpp}): the same op on CUDA tensors, its GEMMs through cuBLAS
# (at::mm) per vocabulary block and the per-row log-sum-exp / gradient passes in CUDA kernels; targets are asserted
# on the device; a frozen weight takes linear_logprobs_frozen_weight there too (csrc/cuda/linear_logprobs_host.cpp).
from tao_engine.ops.extension import cuda_backend_probe  # noqa: E402


def _linear_logprobs_cuda_supports(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> tuple[bool, str]:
    devices = {hidden.device, weight.device, targets.device}
    on_cuda = (
        len(devices) == 1 and hidden.device.type == "cuda",
        f"hidden, weight and targets must be on one CUDA device, got {sorted(map(str, devices))}",
    )
    return _supports(on_cuda, hidden, weight, targets)


linear_logprobs.register("cuda", _linear_logprobs_compiled, cuda_backend_probe, _linear_logprobs_cuda_supports)
