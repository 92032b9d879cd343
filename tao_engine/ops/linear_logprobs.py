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
from typing import Any

import torch
from torch import Tensor

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


def _supports(device_ok: tuple[bool, str], a: Any) -> tuple[bool, str]:
    if not device_ok[0]:
        return device_ok
    hidden, weight, targets = a.hidden, a.weight, a.targets
    for name, t in (("hidden", hidden), ("weight", weight)):
        if t.dtype not in _FLOAT_DTYPES:
            return False, f"{name} must be float32, bfloat16 or float16, got {t.dtype}"
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        return False, f"targets must be an integer tensor, got {targets.dtype}"
    if hidden.dim() != 2 or weight.dim() != 2 or targets.dim() != 1:
        shapes = f"hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}, targets {tuple(targets.shape)}"
        return False, f"hidden must be 2-D [N, H], weight 2-D [V, H] and targets 1-D [N]; got {shapes}"
    return True, ""


def _returned(a: Any, logprobs: torch.Tensor, entropy: torch.Tensor) -> Any:
    return (logprobs, entropy) if a.return_entropy else logprobs


# --- triton backend (kernels/linear_logprobs.py); the kernel module is imported on first call, never at import time.
from tao_engine.ops import triton_support  # noqa: E402


def _linear_logprobs_triton(a: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    check_linear_logprobs_args(a.hidden, a.weight, a.targets, a.temperature)
    kernels = triton_support.kernel_module("linear_logprobs")
    # With a frozen weight, Cov_p(z, W) (the entropy's gradient) costs a GEMM: only when the entropy is returned.
    logprobs, entropy = kernels.linear_logprobs(
        a.hidden, a.weight, a.targets.long(), float(a.temperature), entropy_grad=a.return_entropy
    )
    return _returned(a, logprobs, entropy)


linear_logprobs.register(
    "triton", _linear_logprobs_triton, triton_support.triton_probe,
    lambda a: _supports(triton_support.device_supported(a.hidden, a.weight, a.targets), a),
)  # fmt: skip


# --- cpp and cuda backends (csrc/cpu/linear_logprobs*.cpp; csrc/cuda/linear_logprobs*.{cu,cpp}, its GEMMs through
# cuBLAS (at::mm) per vocabulary block and the per-row log-sum-exp / gradient passes in CUDA kernels, targets
# asserted on the device): `torch.ops.tao_engine.linear_logprobs` or `.linear_logprobs_frozen_weight`, with autograd
# formulas and fake kernels (below). The extension loads in the probe, on first use.
from tao_engine.ops.extension import cpu_backend_probe, cuda_backend_probe  # noqa: E402


def takes_frozen_weight_path(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the `cpp` and `cuda` backends run linear_logprobs_frozen_weight: its forward pays one more GEMM so
    that the backward needs none, which pays off only when hidden's gradient will be asked for and the weight's
    will not."""
    return torch.is_grad_enabled() and hidden.requires_grad and not weight.requires_grad


def _linear_logprobs_compiled(a: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    # The ops take int64 targets; the reference accepts any integer dtype, so convert (a no-op for int64).
    args = (a.hidden, a.weight, a.targets.long(), float(a.temperature))
    if not takes_frozen_weight_path(a.hidden, a.weight):
        logprobs, entropy, _ = torch.ops.tao_engine.linear_logprobs(*args)  # lse: only for the backward
    else:
        # Cov_p(z, W) costs a third GEMM: only when the entropy is returned (its gradient may then be asked for).
        logprobs, entropy, *_ = torch.ops.tao_engine.linear_logprobs_frozen_weight(*args, a.return_entropy)
    return _returned(a, logprobs, entropy)


def _on_cpu(a: Any) -> tuple[bool, str]:
    devices = {a.hidden.device.type, a.weight.device.type, a.targets.device.type}
    return devices == {"cpu"}, f"hidden, weight and targets must be CPU tensors, got {sorted(devices)}"


def _on_one_cuda_device(a: Any) -> tuple[bool, str]:
    devices = {a.hidden.device, a.weight.device, a.targets.device}
    return (
        len(devices) == 1 and a.hidden.device.type == "cuda",
        f"hidden, weight and targets must be on one CUDA device, got {sorted(map(str, devices))}",
    )


linear_logprobs.register("cpp", _linear_logprobs_compiled, cpu_backend_probe, lambda a: _supports(_on_cpu(a), a))
linear_logprobs.register(
    "cuda", _linear_logprobs_compiled, cuda_backend_probe, lambda a: _supports(_on_one_cuda_device(a), a)
)

# --- fake kernels and autograd formulas of the compiled ops, applied when `_C` loads (ops/extension.py).
# linear_logprobs returns lse as a third output, saved with the entropy for the backward, which recomputes the logits
# block by block instead of keeping [N, V]. linear_logprobs_frozen_weight, for a weight that needs no gradient, also
# returns E_p[W] and (with entropy_grad) Cov_p(z, W) per row, [N, H] each, so the gradient in hidden is elementwise:
# (g_lp (W[target] - E_p[W]) - g_ent Cov_p(z, W)) / T, with no recomputed logits and no GEMM.
def _check_shapes(op: str, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> None:
    # The same checks (and ValueError) as the C++ kernels, so tracing fails with the message of eager mode.
    torch._check_value(hidden.dim() == 2, lambda: f"{op}: hidden must be 2-D [N, H], got shape {tuple(hidden.shape)}")
    torch._check_value(
        weight.dim() == 2 and weight.shape[1] == hidden.shape[1],
        lambda: f"{op}: weight must be 2-D [V, H] with H = hidden.size(1), got shape {tuple(weight.shape)}",
    )
    torch._check_value(
        targets.dim() == 1 and targets.shape[0] == hidden.shape[0],
        lambda: f"{op}: targets must be 1-D [N] with N = hidden.size(0), got shape {tuple(targets.shape)}",
    )


def _row_stats(hidden: torch.Tensor, count: int) -> tuple[torch.Tensor, ...]:
    return tuple(hidden.new_empty((hidden.shape[0],), dtype=torch.float32) for _ in range(count))  # [N] fp32 each


def _linear_logprobs_fake(hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float) -> tuple[Tensor, ...]:
    _check_shapes("tao_engine::linear_logprobs", hidden, weight, targets)
    return _row_stats(hidden, 3)  # logprobs, entropy, lse


def _linear_logprobs_backward_fake(
    grad_logprobs: Tensor, grad_entropy: Tensor, hidden: Tensor, weight: Tensor, targets: Tensor, lse: Tensor,
    entropy: Tensor, temperature: float, compute_grad_hidden: bool, compute_grad_weight: bool,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    _check_shapes("tao_engine::linear_logprobs_backward", hidden, weight, targets)
    grad_hidden = hidden.new_empty(hidden.shape if compute_grad_hidden else (0,))  # [N, H] or [0], contiguous
    grad_weight = weight.new_empty(weight.shape if compute_grad_weight else (0,))  # [V, H] or [0], contiguous
    return grad_hidden, grad_weight


def _frozen_weight_fake(
    hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float, entropy_grad: bool
) -> tuple[Tensor, ...]:
    _check_shapes("tao_engine::linear_logprobs_frozen_weight", hidden, weight, targets)
    mean_weight = hidden.new_empty(hidden.shape, dtype=torch.float32)  # [N, H]
    entropy_weight = hidden.new_empty(hidden.shape if entropy_grad else (0,), dtype=torch.float32)  # [N, H] or [0]
    return (*_row_stats(hidden, 3), mean_weight, entropy_weight)  # logprobs, entropy, lse, E_p[W], Cov_p(z, W)


def _recomputing_backward(
    ctx: Any, grad_logprobs: Tensor | None, grad_entropy: Tensor | None, saved: tuple[Tensor, ...], need_hidden: bool
) -> tuple[Tensor | None, Tensor | None]:
    """(grad hidden, grad weight) from the backward that recomputes the logits; `saved` = hidden, weight, targets,
    lse, entropy. An output that was not used has no gradient (None) or a materialized zero one: a zero term."""
    zeros = torch.zeros_like(saved[3])
    grad_hidden, grad_weight = torch.ops.tao_engine.linear_logprobs_backward(
        zeros if grad_logprobs is None else grad_logprobs, zeros if grad_entropy is None else grad_entropy,
        *saved, ctx.temperature, need_hidden, ctx.needs_input_grad[1],
    )  # fmt: skip
    return (grad_hidden if need_hidden else None), (grad_weight if ctx.needs_input_grad[1] else None)


def _linear_logprobs_setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    hidden, weight, targets, temperature = inputs
    _, entropy, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(hidden, weight, targets, lse, entropy)
    ctx.temperature = temperature


def _linear_logprobs_backward(ctx: Any, grad_logprobs: Any, grad_entropy: Any, _grad_lse: Any) -> tuple[Any, ...]:
    if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
        return None, None, None, None
    grads = _recomputing_backward(ctx, grad_logprobs, grad_entropy, ctx.saved_tensors, ctx.needs_input_grad[0])
    return (*grads, None, None)


def _frozen_weight_setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    hidden, weight, targets, temperature, entropy_grad = inputs
    _, entropy, lse, mean_weight, entropy_weight = output
    # One call: a second would replace the first's list. Without Cov_p(z, W) only the log-probs have a gradient.
    constants = (lse, mean_weight, entropy_weight) if entropy_grad else (entropy, lse, mean_weight, entropy_weight)
    ctx.mark_non_differentiable(*constants)
    # hidden only serves the recomputing fallback for a weight that requires grad (the op called directly).
    kept_hidden = hidden if weight.requires_grad else None
    ctx.save_for_backward(kept_hidden, weight, targets, lse, entropy, mean_weight, entropy_weight)
    ctx.temperature, ctx.entropy_grad, ctx.hidden_dtype = temperature, entropy_grad, hidden.dtype


def _frozen_weight_backward(ctx: Any, grad_logprobs: Any, grad_entropy: Any, *_grad_saved: Any) -> tuple[Any, ...]:
    hidden, weight, targets, lse, entropy, mean_weight, entropy_weight = ctx.saved_tensors
    need_hidden = ctx.needs_input_grad[0]
    if not ctx.entropy_grad:
        grad_entropy = None  # entropy is non-differentiable then (a materialized zero at most)
    if ctx.needs_input_grad[1]:
        # The weight's gradient needs the logits: the recomputing backward gives both gradients.
        saved = (hidden, weight, targets, lse, entropy)
        return (*_recomputing_backward(ctx, grad_logprobs, grad_entropy, saved, need_hidden), None, None, None)
    if not need_hidden:
        return None, None, None, None, None
    inv_t = 1.0 / ctx.temperature
    grad_hidden = torch.zeros_like(mean_weight)  # [N, H] fp32
    if grad_logprobs is not None:
        target_weight = weight.index_select(0, targets).float()  # [N, H]: W[target]
        grad_hidden = (target_weight - mean_weight) * (grad_logprobs * inv_t).unsqueeze(1)
    if grad_entropy is not None:
        grad_hidden = grad_hidden - entropy_weight * (grad_entropy * inv_t).unsqueeze(1)
    return grad_hidden.to(ctx.hidden_dtype), None, None, None, None


linear_logprobs.register_compiled(
    "tao_engine::linear_logprobs", _linear_logprobs_fake, _linear_logprobs_backward, _linear_logprobs_setup_context
)
linear_logprobs.register_compiled("tao_engine::linear_logprobs_backward", _linear_logprobs_backward_fake)
linear_logprobs.register_compiled(
    "tao_engine::linear_logprobs_frozen_weight", _frozen_weight_fake, _frozen_weight_backward,
    _frozen_weight_setup_context,
)  # fmt: skip
