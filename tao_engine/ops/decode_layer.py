"""One decoder layer's decode step over the paged KV cache, with the engine's packed weights, as one op.

The engine's CPU decode runs ~12 ops a layer (norms, the joined q|k|v GEMM, rotary, the cache write, paged attention,
o, the norm after it, gate|up, the activation, down); from Python each costs a module call, a registry resolution and
torch.ops' argument parsing, ~20-40 us together, which at batch 64 on a 2-core CPU added up to as much time as the
small ops themselves. The `cpp` backend (csrc/cpu/decode_layer.cpp) runs the same registered kernels in the same
order from C++, so it agrees with this reference bit for bit whenever the reference's ops resolve to their `cpp`
backends (CPU tensors of a float dtype, the default there).

weights: [q|k|v, o, gate|up, down], each prepacked by `torch.ops.mkldnn._reorder_linear_weight` (the engine's
PackedLinear) or plain [out, in] matrices; biases: four entries, None where a projection has none; norms: the
[input, post_attention] RMSNorm weights, then [q_norm, k_norm] for an architecture that normalises heads (Qwen3).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tao_engine.ops.activation import silu_and_mul
from tao_engine.ops.add_rms_norm import add_rms_norm
from tao_engine.ops.kv_cache import write_kv_cache
from tao_engine.ops.paged_attention import paged_decode_attention
from tao_engine.ops.registry import define_op
from tao_engine.ops.rms_norm import rms_norm
from tao_engine.ops.rotary import apply_rotary


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # [N, in] -> [N, out]; a prepacked (oneDNN) weight goes through its own linear
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def decode_layer_reference(
    hidden: torch.Tensor,
    residual: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    slot_mapping: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    norms: list[torch.Tensor],
    weights: list[torch.Tensor],
    biases: list[torch.Tensor | None],
    num_heads: int,
    num_kv_heads: int,
    eps: float,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    # hidden [N, H] (the previous layer's MLP output; the embeddings when residual is None) -> (this layer's MLP
    # output [N, H], the residual stream [N, H]), as DecoderLayer.forward; the caches get the N new tokens' K/V.
    if len(norms) not in (2, 4) or len(weights) != 4 or len(biases) != 4:
        raise ValueError(
            f"decode_layer: norms must hold 2 or 4 weights and weights/biases 4 entries each (q|k|v, o, gate|up, "
            f"down), got {len(norms)}, {len(weights)}, {len(biases)}"
        )
    n, head_dim = hidden.shape[0], cos.shape[-1]
    if residual is None:
        normed, residual = rms_norm(hidden, norms[0], eps), hidden
    else:
        normed, residual = add_rms_norm(hidden, residual, norms[0], eps)
    q_size, kv_size = num_heads * head_dim, num_kv_heads * head_dim
    q, k, v = _linear(normed, weights[0], biases[0]).split([q_size, kv_size, kv_size], dim=-1)
    q, k, v = q.view(n, num_heads, head_dim), k.view(n, num_kv_heads, head_dim), v.view(n, num_kv_heads, head_dim)
    if len(norms) == 4:
        q, k = rms_norm(q, norms[2], eps), rms_norm(k, norms[3], eps)
    q, k = apply_rotary(q, k, cos, sin)
    write_kv_cache(k, v, k_cache, v_cache, slot_mapping)
    attended = paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)  # [N, Hq, D]
    normed, residual = add_rms_norm(_linear(attended.reshape(n, q_size), weights[1], biases[1]), residual, norms[1],
                                    eps)
    gate, up = _linear(normed, weights[2], biases[2]).chunk(2, dim=-1)  # column halves of [N, 2I], read in place
    return _linear(silu_and_mul(gate, up), weights[3], biases[3]), residual


decode_layer = define_op("decode_layer", decode_layer_reference)


# --- cpp backend (csrc/cpu/decode_layer.cpp). It calls the cpp kernels of the ops above directly, so it takes what
# all of them take: CPU tensors, one float dtype for the stream and the caches (fp32 or bf16, where oneDNN's packed
# linear runs), norm weights in that dtype or fp32, integer lengths, contiguous caches.
from tao_engine.ops.extension import cpu_backend_probe  # noqa: E402

_CPP_DTYPES = (torch.float32, torch.bfloat16)


def _decode_layer_cpp(a: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ops.tao_engine.decode_layer(*a[:12], int(a.num_heads), int(a.num_kv_heads), float(a.eps),
                                             float(a.scale))


def _decode_layer_cpp_supports(a: Any) -> tuple[bool, str]:
    hidden = a.hidden
    dense = [hidden, a.cos, a.sin, a.slot_mapping, a.block_tables, a.context_lens, a.k_cache, a.v_cache, *a.norms]
    dense += [b for b in a.biases if b is not None] + ([] if a.residual is None else [a.residual])
    if any(t.device.type != "cpu" for t in dense + list(a.weights)):
        return False, "every tensor must be on the CPU"
    if hidden.dtype not in _CPP_DTYPES or a.k_cache.dtype != hidden.dtype or a.v_cache.dtype != hidden.dtype:
        return False, f"hidden and the caches must share float32 or bfloat16, got {hidden.dtype}, {a.k_cache.dtype}"
    if a.residual is not None and a.residual.dtype != hidden.dtype:
        return False, f"residual must have hidden's dtype, got {a.residual.dtype} for {hidden.dtype}"
    if any(w.dtype != hidden.dtype for w in a.weights):
        return False, f"the weights must be {hidden.dtype}, got {[w.dtype for w in a.weights]}"
    if any(w.dtype not in (hidden.dtype, torch.float32) for w in a.norms):
        return False, f"norm weights must be {hidden.dtype} or float32"
    if any(b is not None and b.dtype != hidden.dtype for b in a.biases):
        return False, f"biases must be {hidden.dtype}"
    if a.cos.dtype != torch.float32 or a.sin.dtype != torch.float32:
        return False, "cos and sin must be float32 (RotaryEmbedding's output)"
    lens = a.context_lens
    if lens.dtype.is_floating_point or lens.dtype == torch.bool:
        return False, f"context_lens must be an integer tensor, got {lens.dtype}"
    if not (a.k_cache.is_contiguous() and a.v_cache.is_contiguous()):
        return False, "k_cache and v_cache must be contiguous (allocate them with allocate_kv_caches)"
    return True, ""


decode_layer.register("cpp", _decode_layer_cpp, cpu_backend_probe, _decode_layer_cpp_supports)
