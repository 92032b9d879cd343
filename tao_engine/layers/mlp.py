"""Gated MLP of the Llama family: down(silu(gate(x)) * up(x)), parameter names as in transformers."""

from __future__ import annotations

import torch
from torch import nn

from tao_engine import ops
from tao_engine.layers.packed_linear import LayerLinears


class GatedMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, linears: LayerLinears | None = None) -> torch.Tensor:
        # [N, H] -> 2 x [N, I] -> [N, I] -> [N, H]; the weights stay separate (HF names, trainable in place)
        if linears is None:
            return self.down_proj(ops.silu_and_mul(self.gate_proj(x), self.up_proj(x)))
        # The engine's packed copy: gate|up in one GEMM, its two column halves read in place (strided rows).
        gate, up = linears.gate_up(x).chunk(2, dim=-1)
        return linears.down(ops.silu_and_mul(gate, up))
