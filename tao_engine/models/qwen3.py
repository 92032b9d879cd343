"""Qwen3: RMSNorm over head_dim on q and k before the rotation; `attention_bias` covers q/k/v/o, no MLP bias."""

from __future__ import annotations

from tao_engine.models.config import ModelConfig
from tao_engine.models.decoder import DecoderFlags, DecoderForCausalLM


class Qwen3ForCausalLM(DecoderForCausalLM):
    architecture = "Qwen3ForCausalLM"

    @classmethod
    def decoder_flags(cls, config: ModelConfig) -> DecoderFlags:
        return DecoderFlags(qkv_bias=config.attention_bias, o_bias=config.attention_bias, qk_norm=True)
