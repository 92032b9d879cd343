"""Clipped policy-gradient loss of RL fine-tuning (PPO family), with its variants, per token and aggregated.

Inputs: logprobs [B, T] fp32 (the trainer's, differentiable), old_logprobs [B, T] (the sampler's), advantages [B] or
[B, T], mask [B, T] (bool, or float 0/1 weights), optional ref_logprobs [B, T] and token_weights [B, T]. Only
positions with mask != 0 are read: padding may hold anything, even NaN. Everything is computed in fp32, and the loss
is differentiable w.r.t. logprobs only. With m the mask, A the advantage and delta = logprobs - old_logprobs:

Ratio (`ratio_level`)
- "token" (PPO, GRPO, DAPO): r_t = exp(delta_t).
- "sequence" (GSPO): s_b = exp(sum_t m_t delta_t / sum_t m_t), the length-normalized sequence ratio, used per token
  in GSPO's token form r_t = sg[s_b] * exp(logprobs_t - sg[logprobs_t]): its value is s_b and d r_t / d logprobs_t =
  s_b, so every token of a sequence is clipped together and gradients flow per token.

Surrogate per token (PPO's clip; `clip_low` != `clip_high` is DAPO's clip-higher):
    pg_t = -min(r_t A_t, clip(r_t, 1 - clip_low, 1 + clip_high) A_t)
Dual clip (Ye et al. 2020, "dual-clip PPO"; `dual_clip` = c > 1): where A_t < 0, pg_t = min(pg_t, -c A_t), a cap
on the loss of tokens whose ratio grew far while their advantage is negative.
`token_weights` w_t multiply pg_t: the truncated importance-sampling correction (TIS) of the gap between the
sampler's and the trainer's log-probs, computed by the caller (e.g. min(exp(old - sampler_logprobs), C)).

KL penalty to a reference policy (`kl_type`, added per token times `kl_coef` when ref_logprobs is given), with
x = ref_logprobs - logprobs:
    k1 = -x    k2 = x^2 / 2    k3 = exp(x) - x - 1   (Schulman's estimators; GRPO uses k3)
kl_coef > 0 without ref_logprobs is an error; with ref_logprobs and kl_coef = 0 the KL is only measured (kl_mean).

Per-token loss: l_t = m_t (w_t pg_t + kl_coef kl_t), 0 where m_t = 0 (returned as `per_token_loss`, detached).
Aggregation (`loss_agg`), with M_b = sum_t m_t and S the number of sequences with M_b > 0:
- "token_mean" (DAPO): sum_{b,t} l / sum_b M_b.
- "seq_mean_token_mean" (GRPO): (1/S) sum_b (sum_t l_bt / M_b).
- "seq_mean_token_sum": (1/S) sum_b sum_t l_bt.
- "seq_mean_token_sum_norm" (Dr.GRPO): (1/S) sum_b sum_t l_bt / max_tokens (max_tokens required, a constant such as
  the generation budget; other modes ignore it).
Sequences with no masked token contribute 0 and do not count in S; a batch with no masked token has loss 0.

Metrics (0-d fp32, detached; 0 when no token is masked in): clip_fraction = mask-weighted fraction of tokens where
clipping (either bound, or the dual clip) changed pg_t; ratio_mean / ratio_max = mask-weighted mean / max of r_t;
kl_mean = mask-weighted mean of kl_t (0 without ref_logprobs).

Gradient ties follow torch autograd of the reference: where r_t A_t equals the clipped term exactly, torch.minimum
splits the gradient between both branches. Backends: `cpp` (csrc/cpu/policy_loss.cpp) and `triton`
(kernels/policy_loss.py) compute the per-token loss, the reductions and d loss / d logprobs in one fused forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tao_engine.ops.policy_loss_args import PolicyLossOptions, policy_loss_options
from tao_engine.ops.registry import define_op


@dataclass(frozen=True)
class PolicyLossOutput:
    loss: torch.Tensor  # [] fp32, differentiable w.r.t. logprobs
    per_token_loss: torch.Tensor  # [B, T] fp32, detached; 0 where mask is 0
    clip_fraction: torch.Tensor  # [] fp32, detached
    ratio_mean: torch.Tensor
    ratio_max: torch.Tensor
    kl_mean: torch.Tensor  # 0 without ref_logprobs


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    # A denominator that is 1 where x is 0: used only where the numerator is then 0 too.
    return torch.where(x > 0, x, torch.ones_like(x))


def _surrogate(ratio: torch.Tensor, adv: torch.Tensor, opts: PolicyLossOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """(pg [B, T], clipped [B, T] bool): the clipped surrogate loss and where clipping changed it."""
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - opts.clip_low, 1.0 + opts.clip_high) * adv
    pg = -torch.min(unclipped, clipped)
    was_clipped = clipped < unclipped
    if opts.dual_clip is not None:
        cap = -opts.dual_clip * adv
        capped = (adv < 0) & (pg > cap)
        pg = torch.where(capped, cap, pg)
        was_clipped = was_clipped | capped
    return pg, was_clipped


def _kl(x: torch.Tensor, kl_type: str) -> torch.Tensor:
    """KL estimator per token from x = ref_logprobs - logprobs."""
    if kl_type == "k1":
        return -x
    if kl_type == "k2":
        return 0.5 * x.square()
    return torch.exp(x) - x - 1.0


def policy_loss_reference(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logprobs: torch.Tensor | None = None,
    token_weights: torch.Tensor | None = None,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    ratio_level: str = "token",
    kl_type: str = "k3",
    kl_coef: float = 0.0,
    loss_agg: str = "token_mean",
    max_tokens: int | None = None,
) -> PolicyLossOutput:
    opts = policy_loss_options(
        (logprobs, old_logprobs, advantages, mask, ref_logprobs, token_weights),
        (clip_low, clip_high, dual_clip, ratio_level, kl_type, kl_coef, loss_agg, max_tokens),
    )
    m = mask.detach().float()  # [B, T]
    on = m != 0  # positions that are read at all
    lp = logprobs.float()
    delta = torch.where(on, lp - old_logprobs.detach().float(), 0.0)  # [B, T], 0 on padding
    adv = advantages.detach().float()
    adv = torch.where(on, adv[:, None] if adv.dim() == 1 else adv, 0.0)  # [B, T]
    tokens = m.sum(-1)  # [B] M_b
    total = tokens.sum()  # []

    if opts.ratio_level == "token":
        ratio = torch.exp(delta)
    else:
        seq_ratio = torch.exp((m * delta.detach()).sum(-1) / _nonzero(tokens))  # [B] s_b, 1 for empty sequences
        ratio = seq_ratio[:, None] * torch.exp(delta - delta.detach())  # value s_b, gradient s_b per token

    pg, was_clipped = _surrogate(ratio, adv, opts)
    if token_weights is not None:
        pg = pg * torch.where(on, token_weights.detach().float(), 0.0)
    kl = torch.zeros_like(m)
    if ref_logprobs is not None:
        kl = _kl(torch.where(on, ref_logprobs.detach().float() - lp, 0.0), opts.kl_type)
    per_token = m * (pg + opts.kl_coef * kl)  # [B, T], 0 on padding

    sequences = (tokens > 0).sum()  # [] S
    if opts.loss_agg == "token_mean":
        loss = per_token.sum() / _nonzero(total)
    elif opts.loss_agg == "seq_mean_token_mean":
        loss = (per_token.sum(-1) / _nonzero(tokens)).sum() / _nonzero(sequences)
    elif opts.loss_agg == "seq_mean_token_sum":
        loss = per_token.sum() / _nonzero(sequences)
    else:  # seq_mean_token_sum_norm
        loss = per_token.sum() / opts.max_tokens / _nonzero(sequences)

    with torch.no_grad():
        ratio_max = torch.where(on, ratio, -torch.inf).amax() if on.numel() else m.new_zeros(())
        return PolicyLossOutput(
            loss=loss,
            per_token_loss=per_token.detach(),
            clip_fraction=(m * was_clipped).sum() / _nonzero(total),
            ratio_mean=(m * ratio).sum() / _nonzero(total),
            ratio_max=torch.where(total > 0, ratio_max, 0.0),
            kl_mean=(m * kl).sum() / _nonzero(total),
        )


policy_loss = define_op("policy_loss", policy_loss_reference)


def _output_from_stats(loss: torch.Tensor, per_token: torch.Tensor, stats: torch.Tensor) -> PolicyLossOutput:
    # stats [4] = clip_fraction, ratio_mean, ratio_max, kl_mean (the compiled op's and the triton kernel's layout)
    clip_fraction, ratio_mean, ratio_max, kl_mean = stats.detach().unbind(0)
    return PolicyLossOutput(loss, per_token.detach(), clip_fraction, ratio_mean, ratio_max, kl_mean)


_TENSOR_ARGS = 6  # policy_loss's signature: its tensors (logprobs .. token_weights), then its options


def _options(a: Any) -> PolicyLossOptions:
    return policy_loss_options(a[:_TENSOR_ARGS], a[_TENSOR_ARGS:])


def _kernel_inputs(a: Any) -> tuple[torch.Tensor | None, ...]:
    """Every tensor but logprobs, as the kernels read them: fp32 values and a bool or fp32 mask; other dtypes are
    converted (no copy when they match)."""
    mask = a.mask if a.mask.dtype in (torch.bool, torch.float32) else a.mask.float()

    def f32(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().float()

    return f32(a.old_logprobs), f32(a.advantages), mask.detach(), f32(a.ref_logprobs), f32(a.token_weights)


def _supports(device_ok: tuple[bool, str], logprobs: torch.Tensor) -> tuple[bool, str]:
    if not device_ok[0]:
        return device_ok
    if logprobs.dtype != torch.float32:
        return False, f"logprobs must be float32, got {logprobs.dtype}"
    return True, ""


def _tensors(a: Any) -> list[torch.Tensor]:
    return [t for t in a if isinstance(t, torch.Tensor)]


# --- cpp and cuda backends (csrc/cpu/policy_loss.cpp, csrc/cuda/policy_loss*.{cu,cpp}): torch.ops.tao_engine.
# policy_loss, whose autograd formula (below) multiplies the gradient the forward computed by the incoming one.
from tao_engine.ops.extension import cpu_backend_probe, cuda_backend_probe  # noqa: E402


def _policy_loss_compiled(a: Any) -> PolicyLossOutput:
    opts = _options(a)
    compute_grad = torch.is_grad_enabled() and a.logprobs.requires_grad
    loss, per_token, stats, _ = torch.ops.tao_engine.policy_loss(
        a.logprobs, *_kernel_inputs(a), opts.clip_low, opts.clip_high, opts.dual_clip, opts.ratio_level,
        opts.kl_type, opts.kl_coef, opts.loss_agg, opts.max_tokens, compute_grad,
    )  # fmt: skip
    return _output_from_stats(loss, per_token, stats)


def _policy_loss_cpp_supports(a: Any) -> tuple[bool, str]:
    on_cpu = (a.logprobs.device.type == "cpu", f"logprobs must be a CPU tensor, got {a.logprobs.device}")
    return _supports(on_cpu, a.logprobs)


def _policy_loss_cuda_supports(a: Any) -> tuple[bool, str]:
    tensors = _tensors(a)
    on_cuda = (
        a.logprobs.device.type == "cuda" and all(t.device == a.logprobs.device for t in tensors),
        f"every tensor must be on one CUDA device, got {sorted({str(t.device) for t in tensors})}",
    )
    return _supports(on_cuda, a.logprobs)


policy_loss.register("cpp", _policy_loss_compiled, cpu_backend_probe, _policy_loss_cpp_supports)
policy_loss.register("cuda", _policy_loss_compiled, cuda_backend_probe, _policy_loss_cuda_supports)


# --- triton backend (kernels/policy_loss.py), imported on first call, never at import time.
from tao_engine.ops import triton_support  # noqa: E402


def _policy_loss_triton(a: Any) -> PolicyLossOutput:
    opts = _options(a)
    kernels = triton_support.kernel_module("policy_loss")
    loss, per_token, stats = kernels.policy_loss(a.logprobs, *_kernel_inputs(a), opts)
    return _output_from_stats(loss, per_token, stats)


policy_loss.register(
    "triton", _policy_loss_triton, triton_support.triton_probe,
    lambda a: _supports(triton_support.device_supported(*_tensors(a)), a.logprobs),
)  # fmt: skip


# --- fake kernel and autograd formula of the compiled op, applied when `_C` loads (ops/extension.py). The forward
# also returns d loss / d logprobs, so the backward is one multiplication by the incoming gradient of the loss.
def _policy_loss_fake(logprobs: torch.Tensor, *inputs: Any) -> tuple[torch.Tensor, ...]:
    # inputs: old_logprobs .. token_weights, the options clip_low .. max_tokens, compute_grad (csrc/ops.cpp)
    torch._check(logprobs.dim() == 2, lambda: f"policy_loss: logprobs must be 2-D [B, T], got {tuple(logprobs.shape)}")
    f32, compute_grad = torch.float32, inputs[-1]
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
    return (grad,) + (None,) * (len(ctx.needs_input_grad) - 1)  # one per input of the op


policy_loss.register_compiled(
    "tao_engine::policy_loss", _policy_loss_fake, _policy_loss_backward, _policy_loss_setup_context
)
