"""Qwen2: biases on q/k/v (never on o_proj or the MLP), whatever `attention_bias` says, as in transformers."""

from __future__ import annotations

from tao_engine.models.config import ModelConfig
from tao_engine.models.decoder import DecoderFlags, DecoderForCausalLM


class Qwen2ForCausalLM(DecoderForCausalLM):
    architecture = "Qwen2ForCausalLM"

    @classmethod
    def decoder_flags(cls, config: ModelConfig) -> DecoderFlags:
        return DecoderFlags(qkv_bias=True)
