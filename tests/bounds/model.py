"""Error bounds of a whole model's outputs (logits, log-probs, scores): the fp32 rounding of every reduction in the
network, propagated to the outputs by the network itself, in fp64.

A model's fp32 output differs from the exact one by the sum, through the network, of every op's own rounding error;
another implementation (transformers, a paged cache, another packing, other BLAS kernels) makes other errors of the
same size. The rounding model of tests/error_bounds.py (each addition's rounding an independent error of at most u
times the partial sum; uniform, so of standard deviation u |partial sum| / sqrt(3)) gives each op's local error a
standard deviation:
- a Linear's output element sums K products t_k: whatever the order, every partial sum is at most |y| + ||t||_2
  in size (the sum of its terms' mean part and a random-walk part), so sqrt(K / 3) u (|y| + ||t||_2), with
  ||t||_2 = sqrt(x^2 @ W^2^T), plus the output's own rounding u |y|;
- an RMSNorm output (sqrt(H) / 2 + 6) u |y| (its mean of squares, rsqrt and products, see tests/bounds/norm.py);
- the attention core (the input of o_proj), per token, head and dimension: see `_attention_std` (the scores' dot
  products move the weights, the weighted sum of the values adds its own);
- SiLU-and-mul 4 u |a| (the input of down_proj); each residual add u |h|.
`output_bound` runs the model in fp64 with independent Gaussian errors of exactly those sizes injected at every such
point (forward hooks on a private fp64 copy; the model given is untouched), `samples` times, and takes each output's
standard deviation s over the runs (the linear response: the errors are ~1e-7 relative). Two independent
implementations differ by at most LAMBDA sqrt(2) s (LAMBDA = 8: far in the Gaussian tail, as for a single dot
product); one fp32 implementation against fp64 by LAMBDA s.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from tests.bounds.backward_noise import backward_hooks
from tests.error_bounds import LAMBDA, unit_roundoff

U32 = unit_roundoff(torch.float32)


def _noise(like: torch.Tensor, std: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return std * torch.randn(like.shape, generator=gen, dtype=like.dtype, device=like.device)


def _attention_std(attention: nn.Module, state: dict[str, Any], tokens: int) -> torch.Tensor:
    """[N, Hq, D] standard deviation of the attention core's fp32 error, from its own q, k, v (rotated here).

    Per query t and key j: the score's dot product sqrt(D / 3) u scale (|s_tj| + ||q_t * k_j||_2) plus 3 u |s_tj| (the
    scale, rotary and exp2 folding); a weight p_tj then moves by that plus the normalizer's (at most the row's largest
    score error), relative; the output sum_j p_tj v_j adds sqrt(n / 3) u (|o| + ||p v||_2) and its rounding u |o|.
    Sequences come from the batch (causal, each alone); a shared-prompt or cached layout is bounded over the whole
    batch instead (every score, every value), which is larger."""
    from tao_engine.ops.rotary import apply_rotary_reference

    heads, kv_heads, dim = attention.num_heads, attention.num_kv_heads, attention.head_dim
    q = state["q"].reshape(tokens, heads, dim)
    k = state["k"].reshape(tokens, kv_heads, dim)
    q, k = apply_rotary_reference(q, k, state["cos"].to(q.dtype), state["sin"].to(q.dtype))
    k = k.repeat_interleave(heads // kv_heads, 1)
    v = state["v"].reshape(tokens, kv_heads, dim).repeat_interleave(heads // kv_heads, 1)
    batch = state["batch"]
    plain = batch.prompt_seq is None and state["cache"] is None
    cu = batch.cu_seqlens_q.tolist() if plain else [0, tokens]
    std = torch.empty_like(q)
    scale = abs(attention.scale)
    for start, end in zip(cu[:-1], cu[1:], strict=True):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # [H, n, D]
        scores = scale * qs @ ks.transpose(1, 2)  # [H, n, n]
        spread = scale * (qs.square() @ ks.square().transpose(1, 2)).sqrt()
        error = math.sqrt(dim / 3) * U32 * (scores.abs() + spread) + 3 * U32 * scores.abs()
        n = end - start
        if plain:
            visible = torch.ones(n, n, dtype=torch.bool).tril()
        else:  # every key may be visible: bound each weight by the largest error and each value by the largest
            visible = torch.ones(n, n, dtype=torch.bool)
        p = scores.masked_fill(~visible, float("-inf")).softmax(-1)
        error = error.masked_fill(~visible, 0.0)
        weights = p * (error + error.amax(-1, keepdim=True) + 4 * U32)
        out = p @ vs
        count = visible.sum(-1).double().view(1, n, 1)
        values = vs.abs() if plain else vs.abs().amax(1, keepdim=True).expand_as(vs)
        part = weights @ values + (count / 3).sqrt() * U32 * (out.abs() + (p.square() @ vs.square()).sqrt())
        std[start:end] = (part + U32 * out.abs()).transpose(0, 1)
    return std


@contextmanager
def _rounding_noise(model: nn.Module, gen: torch.Generator, storage: torch.dtype, grad: bool) -> Iterator[None]:
    """Within the block, `model` (fp64) adds to each op's output a Gaussian error of its fp32 rounding's size, and
    for a half `storage` dtype that of the weights' and every stored activation's rounding into it."""
    handles = []
    us = 0.0 if storage == torch.float32 else unit_roundoff(storage)
    seen: dict[int, dict[str, torch.Tensor]] = {}  # attention module -> its q, k, v projections of this forward

    def linear_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        # ||terms||_2 of each output's K products: sqrt(x^2 @ W^2^T); the partial sums stay below |y| + that. A LoRA
        # layer adds its thin update (rank r << K) with one more rounding of |y|.
        spread = (inputs[0].square() @ module.weight.square().T).sqrt()
        extra = 0.0 if isinstance(module, nn.Linear) else U32
        std = math.sqrt(module.weight.shape[1] / 3) * U32 * (out.abs() + spread) + (U32 + extra) * out.abs()
        std = std + us * (spread / math.sqrt(3) + out.abs())  # half weights (each rounded once), half output
        return out + _noise(out, std, gen)

    def norm_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: Any) -> Any:
        if isinstance(out, tuple):  # (norm(x + residual), x + residual): the residual add fused into the norm
            normed, total = out
            return normed + _noise(normed, ((math.sqrt(normed.shape[-1]) / 2 + 6) * U32 + 2 * us) * normed.abs(),
                                   gen), total + _noise(total, (U32 + us) * total.abs(), gen)
        return out + _noise(out, ((math.sqrt(out.shape[-1]) / 2 + 6) * U32 + 2 * us) * out.abs(), gen)

    def residual_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: Any) -> Any:
        if isinstance(out, tuple):  # the adds happen in the next norm (norm_hook)
            return out
        return out + _noise(out, 2 * (U32 + us) * out.abs(), gen)  # the layer's two residual adds

    def keep(attention: nn.Module, name: str) -> Callable[..., Any]:
        # q / k after q_norm / k_norm when the model has them (Qwen3), else the projections; v the projection.
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            seen.setdefault(id(attention), {})[name] = out
            return out

        return hook

    def call(attention: nn.Module) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            seen.setdefault(id(attention), {}).update(cos=args[1], sin=args[2], batch=args[3], cache=args[4]
                                                      if len(args) > 4 else None)

        return hook

    def core_hook(attention: nn.Module) -> Callable[..., tuple[torch.Tensor]]:
        def hook(module: nn.Linear, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
            x = inputs[0]  # [N, Hq * D]: the attention core's output
            state = seen.pop(id(attention))
            std = _attention_std(attention, state, x.shape[0]).reshape(x.shape) + us * x.abs()
            return (x + _noise(x, std, gen),)

        return hook

    for module in model.modules():
        kind = type(module).__name__
        if kind == "Attention":
            q_source = module.q_norm if module.q_norm is not None else module.q_proj
            k_source = module.k_norm if module.k_norm is not None else module.k_proj
            handles += [module.register_forward_pre_hook(call(module)),
                        q_source.register_forward_hook(keep(module, "q")),
                        k_source.register_forward_hook(keep(module, "k")),
                        module.v_proj.register_forward_hook(keep(module, "v")),
                        module.o_proj.register_forward_pre_hook(core_hook(module))]
        elif kind == "GatedMLP":
            handles.append(module.down_proj.register_forward_pre_hook(
                lambda m, inputs: (inputs[0] + _noise(inputs[0], (4 * U32 + us) * inputs[0].abs(), gen),)))
        elif kind == "DecoderLayer":
            handles.append(module.register_forward_hook(residual_hook))
        elif kind == "RMSNorm":
            handles.append(module.register_forward_hook(norm_hook))
        if isinstance(module, nn.Linear) or kind == "LoraLinear":
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, nn.Embedding) and us:  # the table rounded to the storage dtype
            handles.append(module.register_forward_hook(lambda m, i, out: out + _noise(out, us * out.abs(), gen)))
    if grad:
        handles += backward_hooks(model, gen)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def output_bound(model: nn.Module, outputs: Callable[[nn.Module], torch.Tensor], implementations: int = 2,
                 samples: int = 8, seed: int = 0, storage: torch.dtype = torch.float32, grad: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs(model) in fp64, the bound on |fp32 implementation - other| element-wise). `outputs` maps a model to a
    tensor (it may tokenize, pack and slice as the test does); it is called on an fp64 copy of `model`.
    `implementations`: 2 when two fp32 computations are compared, 1 when one is compared with fp64 (or with fp32,
    for a half `storage`: a model whose weights and activations are stored in bf16 / fp16, accumulating in fp32).
    `grad`: `outputs` runs backward passes (gradients, training steps), whose rounding is injected too
    (tests/bounds/backward_noise.py); otherwise it runs under no_grad."""
    model64 = copy.deepcopy(model).double().eval()
    # Tiny fp64 forwards are all per-op overhead: one thread spares OpenMP's synchronisation on every op (60x faster
    # on two busy cores); the thread count is put back however the block ends.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.set_grad_enabled(grad):
            # With gradients `outputs` may train the model in place: every run starts from its own copy.
            fresh = (lambda: copy.deepcopy(model64)) if grad else (lambda: model64)
            exact = outputs(fresh()).detach().double()
            gen = torch.Generator().manual_seed(seed)
            squares = torch.zeros_like(exact)
            for _ in range(samples):
                run = fresh()
                with _rounding_noise(run, gen, storage, grad):
                    squares += (outputs(run).detach().double() - exact) ** 2
    finally:
        torch.set_num_threads(threads)
    spread = (squares / samples).sqrt()
    return exact, LAMBDA * math.sqrt(implementations) * spread
