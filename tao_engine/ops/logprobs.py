"""Token log-probabilities from logits: log_softmax(logits / T)[target], computed in fp32.

logits [N, V] (any float dtype), targets [N] int64 -> [N] fp32, every value <= 0.
The `cpp` backend does it in one pass over each row (running max and sum of exp, then the gather) without a
[N, V] fp32 temporary.
"""

from __future__ import annotations

from typing import Any

import torch

from tao_engine.ops.registry import define_op


def token_logprobs_reference(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"token_logprobs: temperature must be > 0, got {temperature}")
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)


token_logprobs = define_op("token_logprobs", token_logprobs_reference)


# --- triton backend (kernels/token_logprobs.py); the kernel module is imported on first call, never at import time.
from tao_engine.ops import triton_support  # noqa: E402


def _token_logprobs_triton(a: Any) -> torch.Tensor:
    return triton_support.kernel_module("token_logprobs").token_logprobs(a.logits, a.targets, a.temperature)


def _token_logprobs_triton_supports(a: Any) -> tuple[bool, str]:
    logits, targets = a.logits, a.targets
    for ok, why in (
        triton_support.device_supported(logits, targets),
        triton_support.dtype_supported("logits", logits, (torch.float32, torch.float16, torch.bfloat16)),
        _integer_targets(targets),
    ):
        if not ok:
            return ok, why
    if logits.dim() == 0 or tuple(targets.shape) != tuple(logits.shape[:-1]):
        shapes = f"targets {tuple(targets.shape)}, logits {tuple(logits.shape)}"
        return False, f"targets must have logits' shape without the vocab dim; got {shapes}"
    return True, ""


def _integer_targets(targets: torch.Tensor) -> tuple[bool, str]:
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        return False, f"targets must be an integer tensor, got {targets.dtype}"
    return True, ""


token_logprobs.register("triton", _token_logprobs_triton, triton_support.triton_probe, _token_logprobs_triton_supports)


# --- cpp and cuda backends (csrc/cpu/token_logprobs.cpp, csrc/cuda/token_logprobs.cu): one op in tao_engine._C,
# `torch.ops.tao_engine.token_logprobs`, with an autograd formula and a fake kernel (below). The extension loads in
# the probes, on first use, never at import time.
from tao_engine.ops.extension import cpu_backend_probe, cuda_backend_probe  # noqa: E402

_COMPILED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _token_logprobs_compiled(a: Any) -> torch.Tensor:
    # The kernels take int64 targets; the reference accepts any integer dtype, so convert (a no-op for int64).
    return torch.ops.tao_engine.token_logprobs(a.logits, a.targets.long(), float(a.temperature))


def _compiled_supports(device_type: str, a: Any) -> tuple[bool, str]:
    logits, targets = a.logits, a.targets
    if logits.device.type != device_type or targets.device != logits.device:
        return False, f"logits and targets must both be {device_type} tensors, got {logits.device} and {targets.device}"
    if logits.dtype not in _COMPILED_DTYPES:
        return False, f"logits must be float32, bfloat16 or float16, got {logits.dtype}"
    ok, why = _integer_targets(targets)
    if not ok:
        return ok, why
    if logits.dim() != 2 or targets.dim() != 1:
        shapes = f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)}"
        return False, f"logits must be 2-D [N, V] and targets 1-D [N] (flatten leading dims first); got {shapes}"
    return True, ""


token_logprobs.register("cpp", _token_logprobs_compiled, cpu_backend_probe, lambda a: _compiled_supports("cpu", a))
token_logprobs.register("cuda", _token_logprobs_compiled, cuda_backend_probe, lambda a: _compiled_supports("cuda", a))


# --- fake kernels and autograd formula of the compiled op, applied when `_C` loads (ops/extension.py).
def _check_shapes(op: str, logits: torch.Tensor, targets: torch.Tensor) -> None:
    # The same shape checks as the C++ kernels, so tracing fails with the same message as eager mode.
    torch._check(logits.dim() == 2, lambda: f"{op}: logits must be 2-D [N, V], got shape {tuple(logits.shape)}")
    torch._check(
        targets.dim() == 1 and targets.shape[0] == logits.shape[0],
        lambda: f"{op}: targets must be 1-D [N] with N = logits.size(0), got shape {tuple(targets.shape)}",
    )


def _token_logprobs_fake(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    _check_shapes("tao_engine::token_logprobs", logits, targets)
    return logits.new_empty((logits.shape[0],), dtype=torch.float32)  # [N]


def _token_logprobs_backward_fake(
    grad_out: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    _check_shapes("tao_engine::token_logprobs_backward", logits, targets)
    return logits.new_empty(logits.shape)  # [N, V], contiguous, logits' dtype


def _token_logprobs_setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    logits, targets, temperature = inputs
    # The backward recomputes the row statistics from logits instead of saving [N, V] probabilities.
    ctx.save_for_backward(logits, targets)
    ctx.temperature = temperature


def _token_logprobs_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
    logits, targets = ctx.saved_tensors
    grad_logits = None
    if ctx.needs_input_grad[0]:
        grad_logits = torch.ops.tao_engine.token_logprobs_backward(grad, logits, targets, ctx.temperature)
    return grad_logits, None, None


token_logprobs.register_compiled(
    "tao_engine::token_logprobs", _token_logprobs_fake, _token_logprobs_backward, _token_logprobs_setup_context
)
token_logprobs.register_compiled("tao_engine::token_logprobs_backward", _token_logprobs_backward_fake)
