"""Token log-probabilities in Triton: log_softmax(logits / T)[target] in fp32, without an [N, V] fp32 temporary.

Forward: one program per row streams the vocabulary in chunks of `BLOCK_V`, keeping a running max and a running sum
of exp (rescaled whenever the max grows), then gathers the target's logit. It saves lse = log(sum(exp(z))) per row
(z = logits / T) so that the backward needs no second reduction.
Backward: grad_logits = g * (onehot(target) - softmax(z)) / T, recomputed chunk by chunk from the saved lse.

Layout: logits [..., V] and targets [...]. Rows are addressed through two strides, the last leading dim's and the
one of all earlier leading dims merged (a copy only if those cannot merge, or if V is not contiguous), so the usual
shifted slices `logits[:, :-1]` and `input_ids[:, 1:]` of [B, T, ...] tensors run without a copy.
A target outside [0, V) cannot raise inside a kernel (the reference's gather does); its log-prob is NaN instead.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import cast_rne

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_BLOCK_V = 4096


@triton.jit
def _row_offsets(row, inner, outer_stride, inner_stride):
    # row -> (row // inner, row % inner) -> element offset of that row's first element.
    return (row // inner) * outer_stride + (row % inner) * inner_stride


@triton.jit
def _token_logprobs_fwd_kernel(
    logits_ptr, targets_ptr, out_ptr, lse_ptr,
    l_outer_stride, l_inner_stride, t_outer_stride, t_inner_stride, inner, V, temperature,
    BLOCK_V: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + _row_offsets(row, inner, l_outer_stride, l_inner_stride)
    m = float("-inf")  # running max of z over the chunks seen so far
    s = 0.0  # running sum of exp(z - m)
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        z = tl.load(row_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32) / temperature  # [BLOCK_V]
        new_m = tl.maximum(m, tl.max(z, axis=0))
        s = s * tl.exp(m - new_m) + tl.sum(tl.exp(z - new_m), axis=0)
        m = new_m
    lse = m + tl.log(s)
    target = tl.load(targets_ptr + _row_offsets(row, inner, t_outer_stride, t_inner_stride)).to(tl.int64)
    valid = (target >= 0) & (target < V)
    z_target = tl.load(row_ptr + target, mask=valid, other=0.0).to(tl.float32) / temperature
    # z_target <= m and s >= 1 make this <= 0 mathematically; the clamp keeps it so under rounding. Not tl.minimum:
    # it would turn the NaN of a row holding a NaN logit into 0, where the reference gives NaN.
    logp = z_target - lse
    logp = tl.where(logp > 0.0, 0.0, logp)
    tl.store(out_ptr + row, tl.where(valid, logp, float("nan")))
    tl.store(lse_ptr + row, lse)


@triton.jit
def _token_logprobs_bwd_kernel(
    grad_out_ptr, logits_ptr, targets_ptr, lse_ptr, grad_logits_ptr,
    g_stride, l_outer_stride, l_inner_stride, t_outer_stride, t_inner_stride, gl_row_stride, inner, V, temperature,
    BLOCK_V: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + _row_offsets(row, inner, l_outer_stride, l_inner_stride)
    out_row_ptr = grad_logits_ptr + row * gl_row_stride
    # An out-of-range target matches no column: its row gets g * (0 - p) / T, zero when the NaN log-prob it had
    # in the forward was masked out of the loss.
    target = tl.load(targets_ptr + _row_offsets(row, inner, t_outer_stride, t_inner_stride)).to(tl.int64)
    # Fold 1/T into the upstream gradient once: d logp / d z_j = onehot_j - p_j and dz/dlogits = 1/T.
    g = tl.load(grad_out_ptr + row * g_stride).to(tl.float32) / temperature
    lse = tl.load(lse_ptr + row)
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        mask = cols < V
        z = tl.load(row_ptr + cols, mask=mask, other=float("-inf")).to(tl.float32) / temperature
        p = tl.exp(z - lse)
        grad = g * (tl.where(cols == target, 1.0, 0.0) - p)
        tl.store(out_row_ptr + cols, cast_rne(grad, grad_logits_ptr.dtype.element_ty), mask=mask)


def _split_rows(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [..., V] -> [outer, inner, V] and targets [...] -> [outer, inner], as views whenever possible."""
    lead = logits.shape[:-1]
    inner = lead[-1] if len(lead) > 0 and lead[-1] > 0 else 1  # an empty batch reshapes as [0, 1, V]
    logits3 = logits.reshape(-1, inner, logits.shape[-1])  # [outer, inner, V]
    if logits3.stride(-1) != 1:
        logits3 = logits3.contiguous()
    return logits3, targets.reshape(-1, inner)  # targets: [outer, inner], any strides


def _check(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"token_logprobs: temperature must be > 0, got {temperature}")
    if logits.dim() < 1 or tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"token_logprobs: targets must have logits' shape without the vocab dim; got logits "
            f"{tuple(logits.shape)}, targets {tuple(targets.shape)}"
        )
    if logits.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"token_logprobs: logits dtype must be in {SUPPORTED_DTYPES}, got {logits.dtype}")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"token_logprobs: targets must be an integer tensor, got {targets.dtype}")
    if logits.device != targets.device:
        raise ValueError(f"token_logprobs: logits are on {logits.device} but targets on {targets.device}")


def _block_v(vocab: int) -> tuple[int, int]:
    block = min(triton.next_power_of_2(vocab), MAX_BLOCK_V)
    return block, (8 if block >= 2048 else 4)


def token_logprobs_forward(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (log-probs [...] fp32, lse [N] fp32). No autograd."""
    _check(logits, targets, temperature)
    logits3, targets2 = _split_rows(logits, targets)
    outer, inner, vocab = logits3.shape
    out = torch.empty(outer * inner, dtype=torch.float32, device=logits.device)
    lse = torch.empty(outer * inner, dtype=torch.float32, device=logits.device)
    if out.numel() > 0:
        block, warps = _block_v(vocab)
        _token_logprobs_fwd_kernel[(outer * inner,)](
            logits3, targets2, out, lse,
            logits3.stride(0), logits3.stride(1), targets2.stride(0), targets2.stride(1), inner, vocab,
            float(temperature), BLOCK_V=block, num_warps=warps,
        )  # fmt: skip
    return out.view(targets.shape), lse


def token_logprobs_backward(
    grad_out: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Returns grad_logits, contiguous, shaped and typed like logits."""
    logits3, targets2 = _split_rows(logits, targets)
    outer, inner, vocab = logits3.shape
    grad_logits = torch.empty((outer * inner, vocab), dtype=logits.dtype, device=logits.device)  # [N, V]
    g = grad_out.reshape(-1)  # [N], any stride (an expanded scalar gradient has stride 0)
    if g.numel() > 0:
        block, warps = _block_v(vocab)
        _token_logprobs_bwd_kernel[(outer * inner,)](
            g, logits3, targets2, lse, grad_logits,
            g.stride(0), logits3.stride(0), logits3.stride(1), targets2.stride(0), targets2.stride(1),
            grad_logits.stride(0), inner, vocab, float(temperature), BLOCK_V=block, num_warps=warps,
        )  # fmt: skip
    return grad_logits.view(logits.shape)


class TokenLogprobsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:  # type: ignore[override]
        out, lse = token_logprobs_forward(logits, targets, temperature)
        ctx.save_for_backward(logits, targets, lse)
        ctx.temperature = temperature
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:  # type: ignore[override]
        logits, targets, lse = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return token_logprobs_backward(grad_out, logits, targets, lse, ctx.temperature), None, None


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log_softmax(logits / temperature)[..., target] in fp32; differentiable in logits."""
    return TokenLogprobsFunction.apply(logits, targets, temperature)
