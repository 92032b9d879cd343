"""Gated activation of the Llama MLP: silu(gate) * up.

gate and up come as two tensors, not one concatenated on the last dim as vLLM's kernel takes: the model
keeps gate_proj and up_proj as separate (HF-named, LoRA-targetable) weights, and joining their outputs would cost a
[N, 2I] copy in the forward and another one (the chunk's backward) in the backward of every layer. The engine's
packed decode (tao_engine/layers/packed_linear.py) does run gate|up as one GEMM and passes its two column halves:
the `cpp` forward reads such strided rows in place. It computes in fp32 and rounds once, with an autograd formula.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tao_engine.ops.registry import define_op


def silu_and_mul_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    # [..., I], [..., I] -> [..., I]
    if gate.shape != up.shape:
        shapes = f"{tuple(gate.shape)} and {tuple(up.shape)}"
        raise ValueError(f"silu_and_mul: gate and up must have one shape, got {shapes}")
    return F.silu(gate) * up


silu_and_mul = define_op("silu_and_mul", silu_and_mul_reference)


# --- cpp backend (csrc/cpu/activation.cpp), with a fake kernel and an autograd formula (below).
from tao_engine.ops.extension import cpu_backend_probe  # noqa: E402

_CPP_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _silu_and_mul_cpp(a: Any) -> torch.Tensor:
    return torch.ops.tao_engine.silu_and_mul(a.gate, a.up)


def _silu_and_mul_cpp_supports(a: Any) -> tuple[bool, str]:
    gate, up = a.gate, a.up
    if gate.device.type != "cpu" or up.device.type != "cpu":
        return False, f"gate and up must be CPU tensors, got {gate.device} and {up.device}"
    if gate.dtype not in _CPP_DTYPES or up.dtype != gate.dtype:
        return False, f"gate and up must share one of float32, bfloat16, float16; got {gate.dtype} and {up.dtype}"
    if gate.shape != up.shape:
        return False, f"gate and up must have one shape, got {tuple(gate.shape)} and {tuple(up.shape)}"
    return True, ""


silu_and_mul.register("cpp", _silu_and_mul_cpp, cpu_backend_probe, _silu_and_mul_cpp_supports)


# --- fake kernels and autograd formula of the compiled op, applied when `_C` loads (ops/extension.py).
def _silu_and_mul_fake(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    torch._check_value(gate.shape == up.shape, lambda: "silu_and_mul: gate and up must have one shape")
    return gate.new_empty(gate.shape)


def _silu_and_mul_backward_fake(
    grad_out: torch.Tensor, gate: torch.Tensor, up: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return gate.new_empty(gate.shape), gate.new_empty(gate.shape)


def _silu_and_mul_setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _silu_and_mul_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    gate, up = ctx.saved_tensors
    grad_gate, grad_up = torch.ops.tao_engine.silu_and_mul_backward(grad, gate, up)
    return (grad_gate if ctx.needs_input_grad[0] else None), (grad_up if ctx.needs_input_grad[1] else None)


silu_and_mul.register_compiled(
    "tao_engine::silu_and_mul", _silu_and_mul_fake, _silu_and_mul_backward, _silu_and_mul_setup_context
)
silu_and_mul.register_compiled("tao_engine::silu_and_mul_backward", _silu_and_mul_backward_fake)
