"""Architecture name (config.json `architectures[0]`) -> model class, and model construction."""

from __future__ import annotations

import torch
from torch import nn

from tao_engine.models.config import ModelConfig
from tao_engine.models.decoder import DecoderForCausalLM
from tao_engine.models.llama import LlamaForCausalLM, MistralForCausalLM
from tao_engine.models.qwen2 import Qwen2ForCausalLM
from tao_engine.models.qwen3 import Qwen3ForCausalLM

_MODEL_CLASSES: dict[str, type[DecoderForCausalLM]] = {
    cls.architecture: cls
    for cls in (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)
    if cls.architecture is not None
}


def supported_architectures() -> tuple[str, ...]:
    return tuple(_MODEL_CLASSES)


def get_model_class(config: ModelConfig) -> type[DecoderForCausalLM]:
    arch = config.architectures[0]
    cls = _MODEL_CLASSES.get(arch)
    if cls is None:
        raise ValueError(
            f"unsupported architecture {arch!r} (config.json 'architectures'); supported: {', '.join(_MODEL_CLASSES)}"
        )
    return cls


def build_model(
    config: ModelConfig, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> nn.Module:
    """A freshly initialised model (transformers' init scheme) in `dtype` on `device`.

    Built on the meta device first, so nothing is allocated or initialised twice; to load a checkpoint instead,
    build under `with torch.device("meta"):` and call `load_state_dict(state_dict, assign=True)`.
    """
    cls = get_model_class(config)
    with torch.device("meta"):
        model = cls(config)
    model = model.to(dtype=dtype).to_empty(device=device)
    model.init_weights()
    return model
