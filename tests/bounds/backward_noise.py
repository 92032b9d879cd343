"""The backward pass's fp32 rounding, injected as noise of its size into an fp64 model's gradients (the forward's is
in tests/bounds/model.py, which uses this for bounds on gradients and on weights after training steps).

With the rounding model of tests/error_bounds.py (each addition's rounding independent, of standard deviation at
most u |partial sum| / sqrt(3), every partial sum below |sum| + ||terms||_2):
- a Linear's input gradient dx = g W sums its out_features products: sqrt(K / 3) u (|dx| + sqrt(g^2 @ W^2));
- its weight gradient dW = g^T x sums over the N tokens of every call: sqrt(N / 3) u (|dW| + sqrt(g^2^T @ x^2)),
  its bias gradient likewise (sqrt(sum g^2));
- every other op's backward (attention's softmax and products over the n tokens, norms over H, the elementwise
  ops), lumped onto the gradient that reaches each Linear's output: (sqrt(n / 3) + 4) u (|g| + its row's rms), with
  n the tokens of the forward (at least every such reduction's length here);
- norm and embedding weights: sums over the N tokens, sqrt(N / 3) u (|grad| + its rms).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tests.error_bounds import unit_roundoff

U32 = unit_roundoff(torch.float32)


def _noise(like: torch.Tensor, std: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return std * torch.randn(like.shape, generator=gen, dtype=like.dtype, device=like.device)


def _rms(t: torch.Tensor) -> torch.Tensor:
    return t.square().mean(-1, keepdim=True).sqrt()


def backward_hooks(model: nn.Module, gen: torch.Generator) -> list[Any]:
    """Register the hooks on `model` (fp64); returns their handles (the caller removes them)."""
    handles: list[Any] = []
    calls: dict[int, list[dict[str, torch.Tensor]]] = {}  # module -> its calls in this forward (x, then g)

    def pre_hook(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...] | None:
        x = inputs[0]
        record = {"x": x.detach().reshape(-1, x.shape[-1])}
        calls.setdefault(id(module), []).append(record)
        if not (torch.is_grad_enabled() and x.requires_grad):
            return None
        local = x.view_as(x)  # this call's own input node: its gradient is this Linear's dx alone

        def on_dx(dx: torch.Tensor) -> torch.Tensor:
            g = record["g"]
            spread = (g.square() @ module.weight.square()).sqrt().view_as(dx)
            return dx + _noise(dx, math.sqrt(module.weight.shape[0] / 3) * U32 * (dx.abs() + spread), gen)

        local.register_hook(on_dx)
        return (local, *inputs[1:])

    def out_hook(module: nn.Module, inputs: tuple[Any, ...], out: torch.Tensor) -> None:
        record = calls[id(module)][-1]
        if not out.requires_grad:
            return
        tokens = record["x"].shape[0]

        def on_g(g: torch.Tensor) -> torch.Tensor:
            g = g + _noise(g, (math.sqrt(tokens / 3) + 4) * U32 * (g.abs() + _rms(g)), gen)
            record["g"] = g.detach().reshape(-1, g.shape[-1])
            return g

        out.register_hook(on_g)

    def param_hook(module: nn.Module, which: str) -> Callable[[torch.Tensor], torch.Tensor]:
        done = [0]  # the calls of earlier backward passes (micro-batches) are not this gradient's

        def hook(grad: torch.Tensor) -> torch.Tensor:
            records = calls.get(id(module), [])
            used = [r for r in records[done[0]:] if "g" in r]
            done[0] = len(records)
            tokens = sum(r["g"].shape[0] for r in used)
            if not used:
                spread = grad.abs()
            elif which == "weight":
                spread = sum(r["g"].square().T @ r["x"].square() for r in used).sqrt()
            elif which == "bias":
                spread = sum(r["g"].square().sum(0) for r in used).sqrt()
            else:  # a LoRA factor: a sum over the tokens too
                spread = _rms(grad)
            return grad + _noise(grad, math.sqrt(max(tokens, 1) / 3) * U32 * (grad.abs() + spread), gen)

        return hook

    def sum_hook(param: nn.Parameter) -> Callable[[torch.Tensor], torch.Tensor]:
        rows = [0]

        def hook(grad: torch.Tensor) -> torch.Tensor:  # a sum over the tokens of the forward
            return grad + _noise(grad, math.sqrt(max(rows[0], 1) / 3) * U32 * (grad.abs() + _rms(grad)), gen)

        def count(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            rows[0] = inputs[0].numel() // max(inputs[0].shape[-1], 1) if inputs[0].dim() > 1 else inputs[0].numel()

        return hook, count

    for module in model.modules():
        kind = type(module).__name__
        if isinstance(module, nn.Linear) or kind == "LoraLinear":
            handles += [module.register_forward_pre_hook(pre_hook), module.register_forward_hook(out_hook)]
            for which in ("weight", "bias", "lora_A", "lora_B"):
                param = getattr(module, which, None)
                if isinstance(param, torch.Tensor) and param.requires_grad:
                    handles.append(param.register_hook(param_hook(module, which)))
        elif kind in ("RMSNorm", "Embedding") and module.weight.requires_grad:
            hook, count = sum_hook(module.weight)
            handles += [module.weight.register_hook(hook), module.register_forward_pre_hook(count)]
    return handles
