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


# --- group_advantages (csrc/cpu/advantages.cpp): inference only, no autograd formula.
@torch.library.register_fake("tao_engine::group_advantages")
def _group_advantages_fake(rewards: torch.Tensor, mode: str, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    torch._check(rewards.dim() == 2, lambda: f"group_advantages: rewards must be [P, n], got {tuple(rewards.shape)}")
    advantages = rewards.new_empty(rewards.shape, dtype=torch.float32)  # [P, n]
    return advantages, rewards.new_empty((rewards.shape[0],), dtype=torch.bool)  # [P]


# --- policy_loss (csrc/cpu/policy_loss.cpp): the forward also returns d loss / d logprobs, so the backward is one
# multiplication by the incoming gradient of the loss.
@torch.library.register_fake("tao_engine::policy_loss")
def _policy_loss_fake(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    ref_logprobs: torch.Tensor | None, token_weights: torch.Tensor | None, clip_low: float, clip_high: float,
    dual_clip: float | None, ratio_level: str, kl_type: str, kl_coef: float, loss_agg: str, max_tokens: int | None,
    compute_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    torch._check(logprobs.dim() == 2, lambda: f"policy_loss: logprobs must be 2-D [B, T], got {tuple(logprobs.shape)}")
    f32 = torch.float32
    grad_shape = tuple(logprobs.shape) if compute_grad else (0,)
    return (
        logprobs.new_empty((), dtype=f32),  # loss
        logprobs.new_empty(logprobs.shape, dtype=f32),  # per_token_loss [B, T]
        logprobs.new_empty((4,), dtype=f32),  # clip_fraction, ratio_mean, ratio_max, kl_mean
        logprobs.new_empty(grad_shape, dtype=f32),  # d loss / d logprobs [B, T] or [0]
    )


def _policy_loss_setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
    _, per_token_loss, stats, grad_logprobs = output
    ctx.mark_non_differentiable(per_token_loss, stats, grad_logprobs)
    ctx.save_for_backward(grad_logprobs)


def _policy_loss_backward(ctx: Any, grad_loss: torch.Tensor, *unused_grads: Any) -> tuple[torch.Tensor | None, ...]:
    (grad_logprobs,) = ctx.saved_tensors
    grad = None
    if ctx.needs_input_grad[0]:
        torch._check(
            grad_logprobs.dim() == 2,
            lambda: "policy_loss: backward needs the forward's gradient; call the op with compute_grad=True",
        )
        grad = grad_loss * grad_logprobs  # [] * [B, T]
    return (grad,) + (None,) * 14


torch.library.register_autograd(
    "tao_engine::policy_loss", _policy_loss_backward, setup_context=_policy_loss_setup_context
)


# --- linear_logprobs (csrc/cpu/linear_logprobs.cpp): the forward returns lse as a third output, saved with the
# entropy for the backward, which recomputes the logits block by block instead of keeping [N, V].
def _check_linear_logprobs_shapes(
    op: str, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> None:
    # The same checks (and ValueError) as the C++ kernels, so tracing fails with the message of eager mode.
    torch._check_value(
        hidden.dim() == 2, lambda: f"{op}: hidden must be 2-D [N, H], got shape {tuple(hidden.shape)}"
    )
    torch._check_value(
        weight.dim() == 2 and weight.shape[1] == hidden.shape[1],
        lambda: f"{op}: weight must be 2-D [V, H] with H = hidden.size(1), got shape {tuple(weight.shape)}",
    )
    torch._check_value(
        targets.dim() == 1 and targets.shape[0] == hidden.shape[0],
        lambda: f"{op}: targets must be 1-D [N] with N = hidden.size(0), got shape {tuple(targets.shape)}",
    )


@torch.library.register_fake("tao_engine::linear_logprobs")
def _linear_logprobs_fake(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_linear_logprobs_shapes("tao_engine::linear_logprobs", hidden, weight, targets)
    rows = (hidden.shape[0],)
    f32 = torch.float32
    # logprobs, entropy, lse: [N] fp32 each
    return hidden.new_empty(rows, dtype=f32), hidden.new_empty(rows, dtype=f32), hidden.new_empty(rows, dtype=f32)


@torch.library.register_fake("tao_engine::linear_logprobs_backward")
def _linear_logprobs_backward_fake(
    grad_logprobs: torch.Tensor, grad_entropy: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor,
    targets: torch.Tensor, lse: torch.Tensor, entropy: torch.Tensor, temperature: float, compute_grad_hidden: bool,
    compute_grad_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    _check_linear_logprobs_shapes("tao_engine::linear_logprobs_backward", hidden, weight, targets)
    grad_hidden = hidden.new_empty(hidden.shape if compute_grad_hidden else (0,))  # [N, H] or [0], contiguous
    grad_weight = weight.new_empty(weight.shape if compute_grad_weight else (0,))  # [V, H] or [0], contiguous
    return grad_hidden, grad_weight


def _linear_logprobs_setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
    hidden, weight, targets, temperature = inputs
    _, entropy, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(hidden, weight, targets, lse, entropy)
    ctx.temperature = temperature


def _linear_logprobs_backward(
    ctx: Any, grad_logprobs: torch.Tensor | None, grad_entropy: torch.Tensor | None, _grad_lse: Any
) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
    hidden, weight, targets, lse, entropy = ctx.saved_tensors
    need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (need_hidden or need_weight):
        return None, None, None, None
    # An output that was not used has no gradient (None) or a materialized zero one; both mean a zero term.
    zeros = torch.zeros_like(lse)
    grad_hidden, grad_weight = torch.ops.tao_engine.linear_logprobs_backward(
        zeros if grad_logprobs is None else grad_logprobs,
        zeros if grad_entropy is None else grad_entropy,
        hidden, weight, targets, lse, entropy, ctx.temperature, need_hidden, need_weight,
    )  # fmt: skip
    return (grad_hidden if need_hidden else None), (grad_weight if need_weight else None), None, None


torch.library.register_autograd(
    "tao_engine::linear_logprobs", _linear_logprobs_backward, setup_context=_linear_logprobs_setup_context
)


# --- linear_logprobs_frozen_weight (csrc/cpu/linear_logprobs_frozen_weight.cpp), for a weight that needs no gradient:
# the forward also returns E_p[W] and (with entropy_grad) Cov_p(z, W) per row, [N, H] each, so the gradient in hidden
# is elementwise: (g_lp (W[target] - E_p[W]) - g_ent Cov_p(z, W)) / T, with no recomputed logits and no GEMM.
@torch.library.register_fake("tao_engine::linear_logprobs_frozen_weight")
def _linear_logprobs_frozen_weight_fake(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float, entropy_grad: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_linear_logprobs_shapes("tao_engine::linear_logprobs_frozen_weight", hidden, weight, targets)
    rows = (hidden.shape[0],)
    f32 = torch.float32
    mean_weight = hidden.new_empty(hidden.shape, dtype=f32)  # [N, H]
    entropy_weight = hidden.new_empty(hidden.shape if entropy_grad else (0,), dtype=f32)  # [N, H] or [0]
    logprobs, entropy, lse = (hidden.new_empty(rows, dtype=f32) for _ in range(3))  # [N] each
    return logprobs, entropy, lse, mean_weight, entropy_weight


def _linear_logprobs_frozen_weight_setup_context(
    ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]
) -> None:
    hidden, weight, targets, temperature, entropy_grad = inputs
    _, entropy, lse, mean_weight, entropy_weight = output
    # One call: a second would replace the first's list. Without Cov_p(z, W) only the log-probs have a gradient.
    constants = (lse, mean_weight, entropy_weight) if entropy_grad else (entropy, lse, mean_weight, entropy_weight)
    ctx.mark_non_differentiable(*constants)
    # hidden only serves the recomputing fallback for a weight that requires grad (the op called directly).
    kept_hidden = hidden if weight.requires_grad else None
    ctx.save_for_backward(kept_hidden, weight, targets, lse, entropy, mean_weight, entropy_weight)
    ctx.temperature, ctx.entropy_grad, ctx.hidden_dtype = temperature, entropy_grad, hidden.dtype


def _linear_logprobs_frozen_weight_backward(
    ctx: Any, grad_logprobs: torch.Tensor | None, grad_entropy: torch.Tensor | None, *_grad_saved: Any
) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
    hidden, weight, targets, lse, entropy, mean_weight, entropy_weight = ctx.saved_tensors
    need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not ctx.entropy_grad:
        grad_entropy = None  # entropy is non-differentiable then (a materialized zero at most)
    if need_weight:
        # The weight's gradient needs the logits: the recomputing backward gives both gradients.
        zeros = torch.zeros_like(lse)
        grad_hidden, grad_weight = torch.ops.tao_engine.linear_logprobs_backward(
            zeros if grad_logprobs is None else grad_logprobs, zeros if grad_entropy is None else grad_entropy,
            hidden, weight, targets, lse, entropy, ctx.temperature, need_hidden, True,
        )  # fmt: skip
        return (grad_hidden if need_hidden else None), grad_weight, None, None, None
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


torch.library.register_autograd(
    "tao_engine::linear_logprobs_frozen_weight",
    _linear_logprobs_frozen_weight_backward,
    setup_context=_linear_logprobs_frozen_weight_setup_context,
)


# --- sample (csrc/cpu/sampling.cpp): inference only, no autograd formula (tokens are not differentiable).
@torch.library.register_fake("tao_engine::sample")
def _sample_fake(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor,
    seeds: torch.Tensor, steps: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    torch._check(logits.dim() == 2, lambda: f"tao_engine::sample: logits must be [B, V], got {tuple(logits.shape)}")
    rows = logits.shape[0]
    for name, param in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p), ("min_p", min_p),
                        ("seeds", seeds), ("steps", steps)):  # fmt: skip
        torch._check(
            param.dim() == 1 and param.shape[0] == rows,
            lambda name=name, param=param: f"tao_engine::sample: {name} must be [B], got {tuple(param.shape)}",
        )
    tokens = logits.new_empty((rows,), dtype=torch.int64)  # [B]
    return tokens, logits.new_empty((rows,), dtype=torch.float32), logits.new_empty((rows,), dtype=torch.float32)


# --- paged_decode_attention and write_kv_cache (csrc/cpu/paged_attention*.cpp, csrc/cpu/kv_cache.cpp): inference
# only, no autograd formula.
@torch.library.register_fake("tao_engine::paged_decode_attention")
def _paged_decode_attention_fake(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    context_lens: torch.Tensor, scale: float,
) -> torch.Tensor:  # fmt: skip
    torch._check_value(
        q.dim() == 3 and k_cache.dim() == 4 and q.shape[2] == k_cache.shape[3],
        lambda: f"paged_decode_attention: q must be [B, Hq, D] and k_cache [num_blocks, block_size, Hkv, D], got "
        f"{tuple(q.shape)} and {tuple(k_cache.shape)}",
    )
    return q.new_empty(q.shape)  # [B, Hq, D], contiguous, q's dtype


@torch.library.register_fake("tao_engine::write_kv_cache")
def _write_kv_cache_fake(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    torch._check_value(
        k.dim() == 3 and k_cache.dim() == 4 and k.shape[1:] == k_cache.shape[2:],
        lambda: f"write_kv_cache: k must be [N, Hkv, D] to match the cache, got {tuple(k.shape)} and "
        f"{tuple(k_cache.shape)}",
    )


# The layer ops (rms_norm, add_rms_norm, silu_and_mul, apply_rotary) register in their own module.
from tao_engine.ops import _C_registrations_layers  # noqa: E402, F401
