"""Gated activation of the Llama MLP: silu(gate) * up, with gate and up concatenated on the last dim."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tao_engine.ops.registry import define_op


def silu_and_mul_reference(gate_up: torch.Tensor) -> torch.Tensor:
    # [..., 2*I] -> [..., I]
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


silu_and_mul = define_op("silu_and_mul", silu_and_mul_reference)
