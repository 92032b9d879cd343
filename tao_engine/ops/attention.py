"""Causal self-attention over packed ragged sequences (prefill without a KV cache, and training).

q [N, Hq, D], k/v [N, Hkv, D] with Hq a multiple of Hkv (GQA); sequence i owns rows cu_seqlens[i]:cu_seqlens[i+1]
and attends causally within itself only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tao_engine.ops.registry import define_op


def varlen_causal_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    scale: float,
) -> torch.Tensor:
    bounds = cu_seqlens.tolist()
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=False)]
    gqa = q.shape[1] != k.shape[1]
    if len(set(lengths)) == 1:
        # Equal lengths (typical for training batches): one batched SDPA call instead of a loop.
        b, t = len(lengths), lengths[0]
        qb, kb, vb = (x.view(b, t, x.shape[1], x.shape[2]).transpose(1, 2) for x in (q, k, v))  # [B, H, T, D]
        out = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, scale=scale, enable_gqa=gqa)
        return out.transpose(1, 2).reshape(q.shape)
    out = torch.empty_like(q)
    for start, end in zip(bounds[:-1], bounds[1:], strict=False):
        qs, ks, vs = (x[start:end].transpose(0, 1) for x in (q, k, v))  # [H, T, D]
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=gqa)
        out[start:end] = o.transpose(0, 1)
    return out


varlen_causal_attention = define_op("varlen_causal_attention", varlen_causal_attention_reference)
