"""Gated MLP of the Llama family: down(silu(gate(x)) * up(x)), parameter names as in transformers."""

from __future__ import annotations

import torch
from torch import nn

from tao_engine import ops


class GatedMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [N, H] -> 2 x [N, I] -> [N, I] -> [N, H]; the weights stay separate (HF names, trainable in place)
        return self.down_proj(ops.silu_and_mul(self.gate_proj(x), self.up_proj(x)))
