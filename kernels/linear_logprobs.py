"""linear_logprobs in Triton: log_softmax(hidden @ weight.T / T)[target] and its entropy, in fp32, trainable, without
the [N, V] logits.

The vocabulary is walked in column blocks of `chunk` rows of the weight. Per block, a GEMM (torch.mm: cuBLAS on a
GPU, ATen on CPU) writes the fp32 logits [N, chunk] into one reused buffer, and a Triton kernel does the rest:
- forward (`_fold_block_kernel`): one program per row streams the block in tiles of BLOCK_V and folds it into the
  row's running statistics, all fp32 [N]: max m, S = sum exp(z - m), U = sum exp(z - m) (z - m) (rescaled when m
  grows, so the entropy log S - U / S never subtracts large numbers), and the target's z once its block comes by;
- backward (`_block_grad_kernel`): the block's logits are recomputed and overwritten in place with d loss / d logits
  = (g_lp (onehot - p) - g_ent p (log p + H)) / T, which two GEMMs push into grad_hidden and grad_weight's rows.
The GEMMs stay with the vendor library because their operands (H up to thousands) do not fit a Triton program's
registers; fusing them would need atomics across programs for grad_weight. What Triton fuses is the part that
would otherwise materialize [N, V] softmax tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# fp32 values of the logits buffer: 64 MiB, small next to [N, V], big enough for full-speed GEMMs.
BLOCK_FLOATS = 1 << 24
MIN_CHUNK = 128
MAX_BLOCK_V = 2048


@triton.jit
def _fold_block_kernel(
    logits_ptr, targets_ptr, max_ptr, sum_ptr, shifted_ptr, target_z_ptr,
    cols, col0, temperature,
    BLOCK_V: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * cols  # the block is a contiguous [N, cols] buffer
    m = tl.load(max_ptr + row)  # running max of z (-inf before the first block)
    s = tl.load(sum_ptr + row)  # sum exp(z - m)
    u = tl.load(shifted_ptr + row)  # sum exp(z - m) * (z - m), <= 0
    for start in range(0, cols, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        mask = offs < cols
        z = tl.load(row_ptr + offs, mask=mask, other=float("-inf")) / temperature  # [BLOCK_V]
        new_m = tl.maximum(m, tl.max(z, axis=0))
        # With m = -inf, s and u are still 0: any finite shift leaves them so (and avoids (-inf) - (-inf)).
        shift = tl.where(m == float("-inf"), 0.0, m - new_m)  # <= 0
        rescale = tl.exp(shift)
        u = rescale * (u + s * shift)
        s = rescale * s
        y = tl.where(mask, z - new_m, 0.0)  # <= 0; 0 in the masked tail, which contributes nothing below
        e = tl.where(mask, tl.exp(y), 0.0)
        s += tl.sum(e, axis=0)
        u += tl.sum(e * y, axis=0)
        m = new_m
    tl.store(max_ptr + row, m)
    tl.store(sum_ptr + row, s)
    tl.store(shifted_ptr + row, u)
    target = tl.load(targets_ptr + row) - col0
    in_block = (target >= 0) & (target < cols)
    z_target = tl.load(row_ptr + target, mask=in_block, other=0.0) / temperature
    tl.store(target_z_ptr + row, z_target, mask=in_block)


@triton.jit
def _block_grad_kernel(
    logits_ptr, targets_ptr, lse_ptr, entropy_ptr, grad_logprobs_ptr, grad_entropy_ptr,
    cols, col0, temperature,
    BLOCK_V: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * cols
    # 1/T folded into the upstream gradients once: d/dlogits = (d/dz) / T.
    a = tl.load(grad_logprobs_ptr + row) / temperature
    b = tl.load(grad_entropy_ptr + row) / temperature
    lse = tl.load(lse_ptr + row)
    entropy = tl.load(entropy_ptr + row)
    target = tl.load(targets_ptr + row) - col0
    for start in range(0, cols, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        mask = offs < cols
        y = tl.load(row_ptr + offs, mask=mask, other=0.0) / temperature - lse  # log p
        p = tl.exp(y)
        grad = tl.where(offs == target, a, 0.0) - p * (a + b * (y + entropy))
        tl.store(row_ptr + offs, grad, mask=mask)


@triton.jit
def _fold_weights_block_kernel(
    logits_ptr, shifted_probs_ptr, targets_ptr, max_ptr, sum_ptr, shifted_ptr, target_z_ptr, rescale_ptr, shift_ptr,
    cols, col0, temperature,
    HAS_SHIFTED: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    # The frozen-weight forward: _fold_block_kernel's statistics, with the block's max taken first (one pass), so
    # that a second pass can overwrite the block with e^(z - m) (and write e^(z - m) (z - m)) relative to the row's
    # new running max m. The row's e^(m_old - m) and m_old - m go to rescale_ptr / shift_ptr for the host, which
    # rescales the [N, H] weight sums with them before adding this block's GEMM.
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * cols  # the block is a contiguous [N, cols] buffer
    m_old = tl.load(max_ptr + row)
    block_max = float("-inf")
    for start in range(0, cols, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        z = tl.load(row_ptr + offs, mask=offs < cols, other=float("-inf")) / temperature
        block_max = tl.maximum(block_max, tl.max(z, axis=0))
    m = tl.maximum(m_old, block_max)
    # With m_old = -inf, the sums are still 0: any finite shift leaves them so (and avoids (-inf) - (-inf)).
    shift = tl.where(m_old == float("-inf"), 0.0, m_old - m)  # <= 0
    rescale = tl.exp(shift)
    s_old = tl.load(sum_ptr + row)
    u = rescale * (tl.load(shifted_ptr + row) + s_old * shift)
    s = rescale * s_old
    target = tl.load(targets_ptr + row) - col0
    # The target's z is picked from the tiles as they are read, by the thread that overwrites it next.
    z_target = 0.0
    for start in range(0, cols, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        mask = offs < cols
        z = tl.load(row_ptr + offs, mask=mask, other=float("-inf")) / temperature
        z_target += tl.sum(tl.where(mask & (offs == target), z, 0.0), axis=0)
        y = tl.where(mask, z - m, 0.0)  # <= 0
        e = tl.where(mask, tl.exp(y), 0.0)
        s += tl.sum(e, axis=0)
        u += tl.sum(e * y, axis=0)
        tl.store(row_ptr + offs, e, mask=mask)
        if HAS_SHIFTED:
            tl.store(shifted_probs_ptr + row * cols + offs, e * y, mask=mask)
    tl.store(max_ptr + row, m)
    tl.store(sum_ptr + row, s)
    tl.store(shifted_ptr + row, u)
    tl.store(target_z_ptr + row, z_target, mask=(target >= 0) & (target < cols))
    tl.store(rescale_ptr + row, rescale)
    tl.store(shift_ptr + row, shift)


def _chunk_size(num_rows: int, vocab: int, chunk: int | None) -> int:
    if chunk is None:
        chunk = max(MIN_CHUNK, BLOCK_FLOATS // max(num_rows, 1))
    if chunk < 1:
        raise ValueError(f"linear_logprobs: chunk must be >= 1, got {chunk}")
    return min(chunk, vocab)


def _block_v(chunk: int, block_v: int | None) -> tuple[int, int]:
    block = block_v or min(triton.next_power_of_2(chunk), MAX_BLOCK_V)
    if block < 1 or block & (block - 1):
        raise ValueError(f"linear_logprobs: block_v must be a power of two, got {block}")
    return block, (8 if block >= 2048 else 4)


def _block_logits(buffer: torch.Tensor, hidden32: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    logits = buffer[: hidden32.shape[0] * w.shape[0]].view(hidden32.shape[0], w.shape[0])  # [N, cols]
    torch.mm(hidden32, w.T, out=logits)
    return logits


def linear_logprobs_forward(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float,
    chunk: int | None = None, block_v: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(logprobs [N], entropy [N], lse [N]), fp32. No autograd; arguments checked by the caller."""
    num_rows, vocab = hidden.shape[0], weight.shape[0]
    f32 = dict(dtype=torch.float32, device=hidden.device)
    run_max = torch.full((num_rows,), float("-inf"), **f32)
    sum_exp = torch.zeros(num_rows, **f32)
    shifted = torch.zeros(num_rows, **f32)
    target_z = torch.empty(num_rows, **f32)  # every target lies in exactly one block, which writes it
    chunk = _chunk_size(num_rows, vocab, chunk)
    block, warps = _block_v(chunk, block_v)
    hidden32 = hidden.float()  # [N, H]; a view for fp32
    buffer = torch.empty(num_rows * chunk, **f32)
    for col0 in range(0, vocab if num_rows > 0 else 0, chunk):
        w = weight[col0 : col0 + chunk].float()  # [cols, H]
        logits = _block_logits(buffer, hidden32, w)
        _fold_block_kernel[(num_rows,)](
            logits, targets, run_max, sum_exp, shifted, target_z, w.shape[0], col0, float(temperature),
            BLOCK_V=block, num_warps=warps,
        )  # fmt: skip
    log_sum = sum_exp.log()
    lse = run_max + log_sum
    # Both clamps only undo rounding: a log-prob > 0 would be a probability > 1.
    logprobs = (target_z - lse).clamp(max=0.0)
    entropy = (log_sum - shifted / sum_exp).clamp(min=0.0)
    return logprobs, entropy, lse


def linear_logprobs_frozen_weight_forward(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float, entropy_grad: bool,
    chunk: int | None = None, block_v: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """(logprobs [N], entropy [N], lse [N], E_p[W] [N, H], Cov_p(z, W) [N, H] or None), fp32, for a weight that needs
    no gradient: the forward of csrc/cpu/linear_logprobs_frozen_weight.cpp, with which the gradient in hidden is
    (g_lp (W[target] - E_p[W]) - g_ent Cov_p(z, W)) / T. One more GEMM per block (two with entropy_grad)."""
    num_rows, vocab = hidden.shape[0], weight.shape[0]
    f32 = dict(dtype=torch.float32, device=hidden.device)
    run_max = torch.full((num_rows,), float("-inf"), **f32)
    sum_exp = torch.zeros(num_rows, **f32)
    shifted = torch.zeros(num_rows, **f32)
    target_z = torch.empty(num_rows, **f32)
    rescale = torch.empty(num_rows, **f32)
    shift = torch.empty(num_rows, **f32)
    weight_sum = torch.zeros(hidden.shape, **f32)  # [N, H]: sum e^(z - m) W_v
    shifted_weight_sum = torch.zeros(hidden.shape, **f32) if entropy_grad else None  # sum e^(z - m) (z - m) W_v
    chunk = _chunk_size(num_rows, vocab, chunk)
    block, warps = _block_v(chunk, block_v)
    hidden32 = hidden.float()
    buffer = torch.empty(num_rows * chunk, **f32)
    shifted_buffer = torch.empty(num_rows * chunk, **f32) if entropy_grad else buffer  # unused without entropy_grad
    for col0 in range(0, vocab if num_rows > 0 else 0, chunk):
        w = weight[col0 : col0 + chunk].float()  # [cols, H]
        logits = _block_logits(buffer, hidden32, w)
        _fold_weights_block_kernel[(num_rows,)](
            logits, shifted_buffer, targets, run_max, sum_exp, shifted, target_z, rescale, shift, w.shape[0], col0,
            float(temperature), HAS_SHIFTED=entropy_grad, BLOCK_V=block, num_warps=warps,
        )  # fmt: skip
        # The sums move to the new max as S and U do: U' = r (U + shift S), then S' = r S (r = e^shift).
        if shifted_weight_sum is not None:
            shifted_weight_sum.add_(weight_sum * shift[:, None]).mul_(rescale[:, None])
            shifted_weight_sum.addmm_(shifted_buffer[: logits.numel()].view(logits.shape), w)
        weight_sum.mul_(rescale[:, None]).addmm_(logits, w)  # `logits` now holds e^(z - m) [N, cols]
    log_sum = sum_exp.log()
    lse = run_max + log_sum
    logprobs = (target_z - lse).clamp(max=0.0)
    entropy = (log_sum - shifted / sum_exp).clamp(min=0.0)
    mean_weight = weight_sum / sum_exp[:, None]  # E_p[W]
    # Cov_p(z, W) = sum e^(z - m) (z - m) W / S - (U / S) E_p[W], as U / S = E_p[z] - m.
    entropy_weight = None
    if shifted_weight_sum is not None:
        entropy_weight = shifted_weight_sum / sum_exp[:, None] - mean_weight * (shifted / sum_exp)[:, None]
    return logprobs, entropy, lse, mean_weight, entropy_weight


def linear_logprobs_backward(
    grad_logprobs: torch.Tensor, grad_entropy: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor,
    targets: torch.Tensor, lse: torch.Tensor, entropy: torch.Tensor, temperature: float, need_hidden: bool,
    need_weight: bool, chunk: int | None = None, block_v: int | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
    """(grad_hidden [N, H] in hidden's dtype or None, grad_weight [V, H] in weight's dtype or None)."""
    num_rows, vocab = hidden.shape[0], weight.shape[0]
    f32 = dict(dtype=torch.float32, device=hidden.device)
    grad_hidden32 = torch.zeros(hidden.shape, **f32) if need_hidden else None
    grad_weight = torch.zeros(weight.shape, dtype=weight.dtype, device=weight.device) if need_weight else None
    chunk = _chunk_size(num_rows, vocab, chunk)
    block, warps = _block_v(chunk, block_v)
    hidden32 = hidden.float()
    buffer = torch.empty(num_rows * chunk, **f32)
    g_lp = grad_logprobs.float().contiguous()  # [N]; autograd may hand an expanded (stride 0) gradient
    g_ent = grad_entropy.float().contiguous()
    for col0 in range(0, vocab if num_rows > 0 and (need_hidden or need_weight) else 0, chunk):
        w = weight[col0 : col0 + chunk].float()  # [cols, H]
        logits = _block_logits(buffer, hidden32, w)
        _block_grad_kernel[(num_rows,)](
            logits, targets, lse, entropy, g_lp, g_ent, w.shape[0], col0, float(temperature),
            BLOCK_V=block, num_warps=warps,
        )  # fmt: skip
        # `logits` now holds d loss / d logits [N, cols].
        if grad_hidden32 is not None:
            grad_hidden32.addmm_(logits, w)  # [N, H]
        if grad_weight is not None:
            grad_weight[col0 : col0 + chunk] = logits.T @ hidden32  # [cols, H], cast to weight's dtype
    grad_hidden = None if grad_hidden32 is None else grad_hidden32.to(hidden.dtype)
    return grad_hidden, grad_weight


class LinearLogprobsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk, block_v):  # type: ignore[override]
        logprobs, entropy, lse = linear_logprobs_forward(hidden, weight, targets, temperature, chunk, block_v)
        ctx.save_for_backward(hidden, weight, targets, lse, entropy)
        ctx.temperature, ctx.chunk, ctx.block_v = temperature, chunk, block_v
        return logprobs, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logprobs, grad_entropy):  # type: ignore[override]
        hidden, weight, targets, lse, entropy = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_hidden or need_weight):
            return None, None, None, None, None, None
        grad_hidden, grad_weight = linear_logprobs_backward(
            grad_logprobs, grad_entropy, hidden, weight, targets, lse, entropy, ctx.temperature,
            need_hidden, need_weight, ctx.chunk, ctx.block_v,
        )  # fmt: skip
        return grad_hidden, grad_weight, None, None, None, None


class LinearLogprobsFrozenWeightFunction(torch.autograd.Function):
    """For a weight that needs no gradient: the backward is elementwise (the formula of the cpp backend's, in
    tao_engine/ops/linear_logprobs.py). The entropy is differentiable only with entropy_grad."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, entropy_grad, chunk, block_v):  # type: ignore[override]
        logprobs, entropy, _, mean_weight, entropy_weight = linear_logprobs_frozen_weight_forward(
            hidden, weight, targets, temperature, entropy_grad, chunk, block_v
        )
        ctx.save_for_backward(weight, targets, mean_weight, entropy_weight)
        ctx.temperature, ctx.hidden_dtype = temperature, hidden.dtype
        if not entropy_grad:
            ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logprobs, grad_entropy):  # type: ignore[override]
        weight, targets, mean_weight, entropy_weight = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        inv_t = 1.0 / ctx.temperature
        target_weight = weight.index_select(0, targets).float()  # [N, H]: W[target]
        grad_hidden = (target_weight - mean_weight) * (grad_logprobs.float() * inv_t)[:, None]
        if entropy_weight is not None:  # entropy_grad: Cov_p(z, W) was kept
            grad_hidden -= entropy_weight * (grad_entropy.float() * inv_t)[:, None]
        return grad_hidden.to(ctx.hidden_dtype), None, None, None, None, None, None


def linear_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
    chunk: int | None = None, block_v: int | None = None, entropy_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(logprobs [N], entropy [N]) in fp32, differentiable in hidden and weight. `targets` must be int64 in [0, V)
    (checked by tao_engine.ops); `chunk` (vocabulary rows per block) and `block_v` (Triton tile) default to sizes
    chosen from the shapes and exist so tests can force several blocks and tiles at small shapes.

    When hidden requires grad and the weight does not (a frozen LM head), the forward also keeps E_p[W] (and, with
    `entropy_grad`, Cov_p(z, W)) per row and the backward is elementwise; without `entropy_grad` the entropy then
    has no gradient."""
    targets = targets.contiguous()
    if torch.is_grad_enabled() and hidden.requires_grad and not weight.requires_grad:
        return LinearLogprobsFrozenWeightFunction.apply(
            hidden, weight, targets, temperature, entropy_grad, chunk, block_v
        )
    return LinearLogprobsFunction.apply(hidden, weight, targets, temperature, chunk, block_v)
