"""Python-side registrations for the ops compiled into `tao_engine._C` (schemas: csrc/ops.cpp).

For each op: a fake (meta) kernel, so `torch.compile` and FakeTensor tracing know output shapes without running it,
and an autograd formula, so the op trains. `tao_engine.ops.extension` imports this module right after `_C` loads;
importing it without `_C` loaded fails, because the ops it names do not exist yet.
"""

from __future__ import annotations

from typing import Any

import torch


def _check_token_logprobs_shapes(op: str, logits: torch.Tensor, targets: torch.Tensor) -> None:
    # The same shape checks as the C++ kernels, so tracing fails with the same message as eager mode.
    torch._check(logits.dim() == 2, lambda: f"{op}: logits must be 2-D [N, V], got shape {tuple(logits.shape)}")
    torch._check(
        targets.dim() == 1 and targets.shape[0] == logits.shape[0],
        lambda: f"{op}: targets must be 1-D [N] with N = logits.size(0), got shape {tuple(targets.shape)}",
    )


@torch.library.register_fake("tao_engine::token_logprobs")
def _token_logprobs_fake(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    _check_token_logprobs_shapes("tao_engine::token_logprobs", logits, targets)
    return logits.new_empty((logits.shape[0],), dtype=torch.float32)  # [N]


@torch.library.register_fake("tao_engine::token_logprobs_backward")
def _token_logprobs_backward_fake(
    grad_out: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    _check_token_logprobs_shapes("tao_engine::token_logprobs_backward", logits, targets)
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


torch.library.register_autograd(
    "tao_engine::token_logprobs", _token_logprobs_backward, setup_context=_token_logprobs_setup_context
)
