"""Decoder models: config, architecture registry, and the model classes (parameter names as in transformers)."""

from tao_engine.models.config import ModelConfig
from tao_engine.models.decoder import DecoderFlags, DecoderForCausalLM
from tao_engine.models.llama import LlamaForCausalLM, MistralForCausalLM
from tao_engine.models.qwen2 import Qwen2ForCausalLM
from tao_engine.models.qwen3 import Qwen3ForCausalLM
from tao_engine.models.registry import build_model, get_model_class, supported_architectures

__all__ = [
    "DecoderFlags",
    "DecoderForCausalLM",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "ModelConfig",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "build_model",
    "get_model_class",
    "supported_architectures",
]
