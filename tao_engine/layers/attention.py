"""Causal self-attention over packed ragged sequences (GQA, optional q/k RMSNorm over head_dim as in Qwen3)."""

from __future__ import annotations

import torch
from torch import nn

from tao_engine import ops
from tao_engine.forward_batch import ForwardBatch
from tao_engine.layers.norm import RMSNorm


class Attention(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        qkv_bias: bool = False,
        o_bias: bool = False,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if num_heads <= 0 or num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(
                f"Attention: num_heads ({num_heads}) must be a positive multiple of num_kv_heads ({num_kv_heads})"
            )
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=o_bias)
        # Qwen3 normalises each head of q and k before the rotation; the modules exist only when used, so the
        # state-dict names match transformers' for every architecture.
        self.q_norm = RMSNorm(head_dim, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, norm_eps) if qk_norm else None

    def forward(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        batch: ForwardBatch,
        kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """hidden [N, H], cos/sin [N, D] -> [N, H].

        Without a cache every sequence is given whole (prefill/training). With one, (k_cache, v_cache) [num_blocks,
        block_size, Hkv, D], the new tokens' K/V are first written to their slots (batch.slot_mapping); a prefill
        with no cached prefix then attends over the fresh K/V, any other step reads the cache via batch.block_tables.
        A batch with the shared-prompt layout (batch.prompt_seq, no cache) goes to `ops.shared_prefix_attention`.
        """
        n = hidden.shape[0]
        q = self.q_proj(hidden).view(n, self.num_heads, self.head_dim)
        k = self.k_proj(hidden).view(n, self.num_kv_heads, self.head_dim)
        v = self.v_proj(hidden).view(n, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q, k = ops.apply_rotary(q, k, cos, sin)
        if batch.prompt_seq is not None:
            if kv_cache is not None:
                raise ValueError("Attention: a shared-prompt batch (prompt_seq) is for cache-free forwards only")
            # Groups [prompt][completions...]: each completion sees its prompt's K/V plus its own causal prefix.
            out = ops.shared_prefix_attention(
                q, k, v, batch.cu_seqlens_q, batch.prompt_seq, batch.max_seqlen_q, self.scale
            )
        elif kv_cache is None or (batch.is_prefill and not batch.has_cached_prefix):
            if kv_cache is not None:
                ops.write_kv_cache(k, v, kv_cache[0], kv_cache[1], batch.slot_mapping)
            # Every query's whole context is among this step's tokens: no need to read the cache back.
            out = ops.varlen_causal_attention(q, k, v, batch.cu_seqlens_q, batch.max_seqlen_q, self.scale)
        else:
            out = self._paged_attention(q, k, v, batch, *kv_cache)
        return self.o_proj(out.reshape(n, self.num_heads * self.head_dim))  # out [N, Hq, D]

    def _paged_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        batch: ForwardBatch,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
    ) -> torch.Tensor:
        # q [N, Hq, D], k/v [N, Hkv, D] -> [N, Hq, D]; the new tokens go to the cache first, then are read back
        # with the rest of their context.
        ops.write_kv_cache(k, v, k_cache, v_cache, batch.slot_mapping)
        if batch.is_prefill:
            return ops.paged_prefill_attention(
                q,
                k_cache,
                v_cache,
                batch.cu_seqlens_q,
                batch.block_tables,
                batch.context_lens,
                batch.max_seqlen_q,
                batch.max_seqlen_k,
                self.scale,
            )
        return ops.paged_decode_attention(q, k_cache, v_cache, batch.block_tables, batch.context_lens, self.scale)
