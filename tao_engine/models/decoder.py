"""The generic pre-norm decoder of the Llama family (Llama, Mistral, Qwen2, Qwen3), over packed ragged tokens.

Parameter names equal transformers' state-dict names, so an HF checkpoint loads with `load_state_dict` as is. The
model holds no buffers: it can be built under `with torch.device("meta"):` and materialised by
`load_state_dict(state_dict, assign=True)`. Architectures differ only in `DecoderFlags` (see llama.py, qwen2.py,
qwen3.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from tao_engine import ops
from tao_engine.forward_batch import ForwardBatch
from tao_engine.layers.attention import Attention
from tao_engine.layers.mlp import GatedMLP
from tao_engine.layers.norm import RMSNorm
from tao_engine.layers.packed_linear import LayerLinears, PackedLinear
from tao_engine.layers.rotary import RotaryEmbedding
from tao_engine.models.config import ModelConfig


@dataclass(frozen=True)
class DecoderFlags:
    """Which optional pieces an architecture has."""

    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, flags: DecoderFlags) -> None:
        super().__init__()
        assert config.head_dim is not None and config.num_key_value_heads is not None  # resolved by ModelConfig
        self.self_attn = Attention(
            config.hidden_size,
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
            qkv_bias=flags.qkv_bias,
            o_bias=flags.o_bias,
            qk_norm=flags.qk_norm,
            norm_eps=config.rms_norm_eps,
        )
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size, bias=flags.mlp_bias)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
        batch: ForwardBatch,
        kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        linears: LayerLinears | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden [N, H]: the previous layer's MLP output, not yet added to the residual stream [N, H] (None for the
        first layer, whose hidden is the embeddings) -> (this layer's MLP output, the residual stream before it).
        Each residual add happens inside the norm after it (ops.add_rms_norm), as in vLLM; the stream stays in the
        model dtype, as transformers keeps it. linears: the engine's packed weights, for a decode step."""
        if linears is not None:  # the engine's decode step on its packed weights: the whole layer as one op
            if kv_cache is None or batch.is_prefill:
                raise ValueError("DecoderLayer: packed linears run decode steps over the KV cache only (a prefill or "
                                 "a cache-free forward uses the modules' weights)")
            attn = self.self_attn
            norms = [self.input_layernorm.weight, self.post_attention_layernorm.weight]
            if attn.q_norm is not None and attn.k_norm is not None:
                norms += [attn.q_norm.weight, attn.k_norm.weight]
            return ops.decode_layer(hidden, residual, cos, sin, batch.slot_mapping, batch.block_tables,
                                    batch.context_lens, kv_cache[0], kv_cache[1], norms, linears.weights,
                                    linears.biases, attn.num_heads, attn.num_kv_heads, self.input_layernorm.eps,
                                    attn.scale)
        if residual is None:
            normed, residual = self.input_layernorm(hidden), hidden
        else:
            normed, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(normed, cos, sin, batch, kv_cache)
        normed, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(normed), residual


class DecoderModel(nn.Module):
    """Embedding, decoder layers and final norm: the `model.` prefix of the state dict."""

    def __init__(self, config: ModelConfig, flags: DecoderFlags) -> None:
        super().__init__()
        assert config.head_dim is not None
        # padding_idx as transformers sets it: the pad row receives no gradient.
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(DecoderLayer(config, flags) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling)

    def forward(
        self,
        input_ids: torch.Tensor,
        batch: ForwardBatch,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        checkpoint_layers: bool = False,
        linears: list[LayerLinears] | None = None,
    ) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids)  # [N, H]
        cos, sin = self.rotary_emb(batch.positions)  # [N, D] each, fp32, shared by every layer
        # Gradient checkpointing: keep only each layer's input and recompute its inside in the backward, trading
        # one more forward for activation memory (training only; a cached forward never trains).
        recompute = checkpoint_layers and kv_caches is None and torch.is_grad_enabled()
        if recompute:
            from torch.utils.checkpoint import checkpoint  # imported on use: it pulls in more of torch
        residual = None
        for i, layer in enumerate(self.layers):
            if recompute:
                hidden, residual = checkpoint(layer, hidden, residual, cos, sin, batch, None, use_reentrant=False)
            else:
                kv_cache = None if kv_caches is None else kv_caches[i]
                packed = None if linears is None else linears[i]
                hidden, residual = layer(hidden, residual, cos, sin, batch, kv_cache, packed)
        if residual is None:  # no layers
            return self.norm(hidden)
        return self.norm(hidden, residual)[0]


class DecoderForCausalLM(nn.Module):
    """Decoder plus LM head. Subclasses name their architecture and override `decoder_flags`."""

    architecture: ClassVar[str | None] = None

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"{type(self).__name__}: config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.model = DecoderModel(config, self.decoder_flags(config))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()
        # Tied checkpoints usually omit `lm_head.weight`, and `assign=True` replaces Parameters (which unties them):
        # fill the key in before loading and re-tie after.
        self.register_load_state_dict_pre_hook(self._fill_tied_head)
        self.register_load_state_dict_post_hook(_retie_after_load)

    @classmethod
    def decoder_flags(cls, config: ModelConfig) -> DecoderFlags:
        """Llama semantics: `attention_bias` covers q/k/v and o, `mlp_bias` the MLP, `qk_norm` Qwen3's norms."""
        return DecoderFlags(config.attention_bias, config.attention_bias, config.mlp_bias, config.qk_norm)

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _fill_tied_head(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        embed_key = prefix + "model.embed_tokens.weight"
        if self.config.tie_word_embeddings and embed_key in state_dict:
            state_dict[prefix + "lm_head.weight"] = state_dict[embed_key]

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """transformers' initialisation: normal(0, initializer_range) matrices, zero biases and pad row, unit norms."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear) and not (module is self.lm_head and self.config.tie_word_embeddings):
                nn.init.normal_(module.weight, 0.0, std, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std, generator=generator)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, RMSNorm):
                module.reset_parameters()
        self.tie_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        batch: ForwardBatch,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        checkpoint_layers: bool = False,
        linears: list[LayerLinears] | None = None,
    ) -> torch.Tensor:
        """Packed tokens [num_tokens] -> final-normed hidden states [num_tokens, hidden].

        kv_caches: one (k_cache, v_cache) pair per layer, each [num_blocks, block_size, Hkv, D] (see
        `tao_engine.engine.kv_allocation`); the batch then carries slot_mapping, and block_tables/context_lens for
        decode steps and for prefills with a cached prefix. None: a full-sequence forward (prefill/training).
        checkpoint_layers: recompute each layer in the backward instead of keeping its activations (training).
        linears: the engine's packed copy of each layer's projections (tao_engine.models.packed_weights), read
        instead of the modules' weights in a decode step (each layer one ops.decode_layer); inference only.
        """
        if kv_caches is not None:
            self._check_cache_batch(kv_caches, batch)
        elif not batch.is_prefill:
            raise ValueError(
                f"{type(self).__name__}.forward: a decode batch (is_prefill=False) needs kv_caches; without a cache "
                "every sequence must be given whole (is_prefill=True)"
            )
        if input_ids.dim() != 1 or input_ids.numel() != batch.num_tokens:
            raise ValueError(
                f"{type(self).__name__}.forward: input_ids must be 1-D with batch.num_tokens={batch.num_tokens} "
                f"entries (packed tokens), got shape {tuple(input_ids.shape)}"
            )
        if linears is not None and torch.is_grad_enabled():
            raise ValueError(f"{type(self).__name__}.forward: linears (a packed copy of the weights) is for "
                             "inference; run it under torch.no_grad() or torch.inference_mode()")
        return self.model(input_ids, batch, kv_caches, checkpoint_layers, linears)

    def _check_cache_batch(self, kv_caches: list[tuple[torch.Tensor, torch.Tensor]], batch: ForwardBatch) -> None:
        name = f"{type(self).__name__}.forward"
        if len(kv_caches) != self.config.num_hidden_layers:
            raise ValueError(
                f"{name}: kv_caches has {len(kv_caches)} entries but the model has {self.config.num_hidden_layers} "
                "layers; give one (k_cache, v_cache) pair per layer (allocate_kv_caches does)"
            )
        if batch.slot_mapping is None:
            raise ValueError(f"{name}: with kv_caches the batch needs slot_mapping (the cache slot of each new token)")
        reads_cache = not batch.is_prefill or batch.has_cached_prefix
        if reads_cache and (batch.block_tables is None or batch.context_lens is None):
            raise ValueError(
                f"{name}: a decode batch or a prefill with has_cached_prefix=True reads the cache, so it needs "
                "block_tables and context_lens"
            )
        if not batch.is_prefill and batch.num_tokens != batch.num_seqs:
            raise ValueError(
                f"{name}: a decode batch has exactly one new token per sequence, got {batch.num_tokens} tokens for "
                f"{batch.num_seqs} sequences"
            )

    def compute_logits(self, hidden: torch.Tensor, head: PackedLinear | None = None) -> torch.Tensor:
        # [..., H] -> [..., V]; head: the engine's packed copy of lm_head
        return self.lm_head(hidden) if head is None else head(hidden)

    def forward_padded(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Padded batch [B, T] (right or left padding; 1 = token) -> logits [B, T, V], zeros at padding.

        Positions count the real tokens of each row (cumsum(mask) - 1), as transformers does with position_ids.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"forward_padded: input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            mask = torch.ones_like(input_ids, dtype=torch.bool)
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"forward_padded: attention_mask shape {tuple(attention_mask.shape)} must equal input_ids shape "
                f"{tuple(input_ids.shape)}"
            )
        else:
            mask = attention_mask.to(torch.bool)
        b, t = input_ids.shape
        lengths = mask.sum(dim=1)  # [B]
        seq_lens = lengths[lengths > 0]  # rows with no token take no part
        out = torch.zeros(b, t, self.config.vocab_size, dtype=self.lm_head.weight.dtype, device=input_ids.device)
        if seq_lens.numel() == 0:
            return out
        cu_seqlens = torch.zeros(seq_lens.numel() + 1, dtype=torch.int32, device=input_ids.device)
        torch.cumsum(seq_lens, 0, out=cu_seqlens[1:])
        batch = ForwardBatch(
            positions=(mask.cumsum(dim=1) - 1)[mask],  # [N], row-major, so each row's tokens stay contiguous
            cu_seqlens_q=cu_seqlens,
            max_seqlen_q=int(seq_lens.max()),
        )
        logits = self.compute_logits(self.forward(input_ids[mask], batch))  # [N, V]
        out[mask] = logits.to(out.dtype)
        return out


def _retie_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    # A module-level function (not a lambda) so that the model still pickles.
    assert isinstance(module, DecoderForCausalLM)
    module.tie_weights()
