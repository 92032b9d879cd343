"""Llama (and SmolLM, which is Llama) and Mistral: the plain decoder. Mistral has no biases whatever its config says."""

from __future__ import annotations

from tao_engine.models.config import ModelConfig
from tao_engine.models.decoder import DecoderFlags, DecoderForCausalLM


class LlamaForCausalLM(DecoderForCausalLM):
    architecture = "LlamaForCausalLM"


class MistralForCausalLM(DecoderForCausalLM):
    architecture = "MistralForCausalLM"

    @classmethod
    def decoder_flags(cls, config: ModelConfig) -> DecoderFlags:
        return DecoderFlags()
