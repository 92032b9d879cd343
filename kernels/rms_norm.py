"""RMSNorm in Triton: y = w * cast_x(x * rsqrt(mean(x^2) + eps)), statistics in fp32.

Semantics follow `tao_engine/ops/rms_norm.py` (and transformers' Llama): the normalized row is rounded to x's dtype
*before* the weight multiply, and the result has the dtype of `weight * x` (torch type promotion).

Forward: one program per row, the whole row in registers (hidden sizes up to `MAX_HIDDEN`); it saves 1/rms per row.
Backward: each program walks a contiguous block of rows, writes grad_x per row and keeps a float32 partial sum of
grad_weight for its block; the partials [programs, H] are summed on the host.

Layout: rows may have any stride as long as the last dimension is contiguous (a slice `x[:, :H]` of a wider
buffer runs without a copy); inputs whose rows cannot be addressed by a single stride are made contiguous first.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import cast_rne

MAX_HIDDEN = 65536
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _rms_norm_fwd_kernel(
    x_ptr, w_ptr, y_ptr, rstd_ptr,
    x_row_stride, y_row_stride, H, eps,
    BLOCK_H: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    mask = cols < H
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)  # [BLOCK_H]
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / H + eps)
    normed = cast_rne(x * rstd, x_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * y_row_stride + cols, cast_rne(w * normed, y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def _rms_norm_bwd_kernel(
    gy_ptr, x_ptr, w_ptr, rstd_ptr, gx_ptr, gw_partial_ptr,
    gy_row_stride, x_row_stride, gx_row_stride, N, H, rows_per_program,
    BLOCK_H: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    mask = cols < H
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    gw_acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    # A fixed trip count with a row mask (rather than range(row_start, row_end)) keeps `row` a tensor in the
    # interpreter too; the last program's rows past N load zeros and contribute nothing.
    for i in range(0, rows_per_program):
        row = pid * rows_per_program + i
        # `mask & (row < N)` would be the natural spelling, but the interpreter turns a block & scalar of booleans
        # into integers that tl.load rejects; one comparison against a per-row limit avoids it.
        row_mask = cols < tl.where(row < N, H, 0)
        x = tl.load(x_ptr + row * x_row_stride + cols, mask=row_mask, other=0.0).to(tl.float32)
        gy = tl.load(gy_ptr + row * gy_row_stride + cols, mask=row_mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + row, mask=row < N, other=0.0)
        normed = x * rstd
        # d/dw of w * cast_x(normed): the rounded normalized row, as the reference saw it.
        gw_acc += gy * cast_rne(normed, x_ptr.dtype.element_ty).to(tl.float32)
        # The cast is the identity for gradients, so g_normed = gy * w and
        # g_x = rstd * (g_normed - normed * mean(g_normed * normed)).
        g_normed = gy * w
        mean_gn = tl.sum(g_normed * normed, axis=0) / H
        gx = rstd * (g_normed - normed * mean_gn)
        tl.store(gx_ptr + row * gx_row_stride + cols, cast_rne(gx, gx_ptr.dtype.element_ty), mask=row_mask)
    tl.store(gw_partial_ptr + pid * H + cols, gw_acc, mask=mask)


def _num_warps(block: int) -> int:
    # One row per program: more warps for wider rows so each thread keeps a handful of elements.
    if block >= 32768:
        return 32
    if block >= 8192:
        return 16
    if block >= 2048:
        return 8
    return 4


def _rows(t: torch.Tensor, hidden: int) -> torch.Tensor:
    """[..., H] -> [N, H] with a contiguous last dim; a view whenever one row stride describes the rows."""
    rows = t.reshape(-1, hidden)
    return rows if rows.stride(-1) == 1 or hidden == 1 else rows.contiguous()


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    if weight.dim() != 1 or x.shape[-1] != weight.shape[0]:
        raise ValueError(
            f"rms_norm: weight must be [H] with H = x.shape[-1]; got x {tuple(x.shape)}, weight {tuple(weight.shape)}"
        )
    if x.dtype not in SUPPORTED_DTYPES or weight.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"rms_norm: dtypes must be in {SUPPORTED_DTYPES}; got x {x.dtype}, weight {weight.dtype}")
    if x.shape[-1] > MAX_HIDDEN:
        raise ValueError(f"rms_norm: hidden size {x.shape[-1]} exceeds the Triton kernel's {MAX_HIDDEN}")
    if x.device != weight.device:
        raise ValueError(f"rms_norm: x is on {x.device} but weight is on {weight.device}")


def rms_norm_forward(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (y [..., H] in promote(x, weight) dtype, rstd [N] fp32). No autograd."""
    _check(x, weight)
    hidden = x.shape[-1]
    x2 = _rows(x, hidden)  # [N, H]
    n_rows = x2.shape[0]
    y = torch.empty((n_rows, hidden), dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    if n_rows > 0:
        block = triton.next_power_of_2(hidden)
        _rms_norm_fwd_kernel[(n_rows,)](
            x2, weight.contiguous(), y, rstd, x2.stride(0), y.stride(0), hidden, float(eps),
            BLOCK_H=block, num_warps=_num_warps(block),
        )  # fmt: skip
    return y.view(x.shape), rstd


def _backward_programs(device: torch.device, n_rows: int) -> int:
    # Enough programs to fill the GPU twice over; each adds one [H] fp32 row of grad_weight partials.
    if device.type == "cuda":
        count = 2 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        count = 8  # TRITON_INTERPRET runs programs one after another; only the partial-sum layout matters.
    return max(1, min(n_rows, count))


def rms_norm_backward(
    grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (grad_x like x, grad_weight like weight), given the forward's saved rstd [N]."""
    hidden = x.shape[-1]
    x2 = _rows(x, hidden)  # [N, H]
    gy2 = _rows(grad_y, hidden)  # [N, H]
    n_rows = x2.shape[0]
    grad_x = torch.empty((n_rows, hidden), dtype=x.dtype, device=x.device)
    programs = _backward_programs(x.device, n_rows)
    rows_per_program = triton.cdiv(n_rows, programs)
    programs = triton.cdiv(n_rows, rows_per_program) if n_rows > 0 else 1  # no program without rows
    gw_partial = torch.zeros((programs, hidden), dtype=torch.float32, device=x.device)
    if n_rows > 0:
        block = triton.next_power_of_2(hidden)
        _rms_norm_bwd_kernel[(programs,)](
            gy2, x2, weight.contiguous(), rstd, grad_x, gw_partial,
            gy2.stride(0), x2.stride(0), grad_x.stride(0), n_rows, hidden, rows_per_program,
            BLOCK_H=block, num_warps=_num_warps(block),
        )  # fmt: skip
    return grad_x.view(x.shape), gw_partial.sum(0).to(weight.dtype)


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        y, rstd = rms_norm_forward(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # type: ignore[override]
        x, weight, rstd = ctx.saved_tensors
        grad_x, grad_w = rms_norm_backward(grad_y, x, weight, rstd)
        need_x, need_w, _ = ctx.needs_input_grad
        return (grad_x if need_x else None), (grad_w if need_w else None), None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim; differentiable in x and weight."""
    return RMSNormFunction.apply(x, weight, eps)
