"""RMSNorm module: holds the weight, delegates the math to `ops.rms_norm` (or `ops.add_rms_norm` with a residual)."""

from __future__ import annotations

import torch
from torch import nn

from tao_engine import ops


class RMSNorm(nn.Module):
    """y = weight * x / sqrt(mean(x^2) + eps) over the last dim; statistics in fp32, output in x's dtype."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError(f"RMSNorm: size must be positive, got {size}")
        if eps <= 0:
            raise ValueError(f"RMSNorm: eps must be positive, got {eps}")
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = float(eps)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """[..., size] -> [..., size]. With a residual: (norm(x + residual), x + residual), the add fused in."""
        if residual is None:
            return ops.rms_norm(x, self.weight, self.eps)
        if x.dtype != residual.dtype:
            # Under autocast a sublayer's output (a linear's, bf16) meets the fp32 residual stream: the unfused add
            # would promote, and so does the fused one, so the stream keeps its dtype as in transformers' models.
            dtype = torch.promote_types(x.dtype, residual.dtype)
            x, residual = x.to(dtype), residual.to(dtype)
        return ops.add_rms_norm(x, residual, self.weight, self.eps)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
