"""ModelConfig: reading HF config.json dicts of both transformers generations, writing them back, clear errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from tao_engine.models import ModelConfig, get_model_class, supported_architectures
from tests.helpers import HF_CASES, hf_config

BASE: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 101,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}


def with_keys(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_reads_transformers_config_and_round_trips(case: str) -> None:
    from transformers import AutoConfig

    hf = hf_config(case)
    config = ModelConfig.from_dict(hf.to_dict())
    assert config.architectures == hf.architectures
    assert config.head_dim == (getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads)
    assert config.num_key_value_heads == hf.num_key_value_heads
    assert config.rope_theta == hf.rope_parameters["rope_theta"]
    assert config.tie_word_embeddings == hf.tie_word_embeddings
    assert ModelConfig.from_dict(config.to_dict()) == config
    # transformers reads our file back to the same model.
    written = config.to_dict()
    again = AutoConfig.for_model(**written)
    assert type(again) is type(hf)
    for key in ("hidden_size", "num_key_value_heads", "vocab_size", "tie_word_embeddings", "rms_norm_eps"):
        assert getattr(again, key) == getattr(hf, key), key
    assert again.rope_parameters == hf.rope_parameters
    for key in ("head_dim", "sliding_window", "attention_bias", "mlp_bias"):
        if hasattr(hf, key):  # not every config class has every key
            assert getattr(again, key) == getattr(hf, key), key


def test_old_and_new_rope_spellings_agree() -> None:
    scaling = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    old = ModelConfig.from_dict(with_keys(rope_theta=500000.0, rope_scaling={"type": "llama3", **scaling}))
    new = ModelConfig.from_dict(with_keys(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, **scaling}))
    assert old == new
    assert old.rope_theta == 500000.0
    assert old.rope_scaling == {"rope_type": "llama3", **scaling}
    written = old.to_dict()
    assert written["rope_theta"] == 500000.0 and written["rope_scaling"]["rope_type"] == "llama3"
    assert written["rope_parameters"] == {"rope_type": "llama3", "rope_theta": 500000.0, **scaling}


def test_defaults_follow_the_model_type() -> None:
    llama = ModelConfig.from_dict(with_keys(num_key_value_heads=None))
    assert llama.num_key_value_heads == 4 and llama.head_dim == 16 and llama.rope_theta == 10000.0
    assert llama.rope_scaling is None and not llama.attention_bias and not llama.qk_norm
    qwen2 = ModelConfig.from_dict(with_keys(architectures=["Qwen2ForCausalLM"], model_type="qwen2"))
    assert qwen2.attention_bias
    qwen3 = ModelConfig.from_dict(with_keys(architectures=None, model_type="qwen3"))
    assert qwen3.architectures == ["Qwen3ForCausalLM"] and qwen3.qk_norm and qwen3.head_dim == 128
    # llama3 without original_max_position_embeddings takes max_position_embeddings, as transformers does.
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    assert ModelConfig.from_dict(with_keys(rope_scaling=rope)).rope_scaling["original_max_position_embeddings"] == 512


def test_token_ids_dtype_and_extra_keys() -> None:
    config = ModelConfig.from_dict(
        with_keys(eos_token_id=[2, 7], pad_token_id=0, torch_dtype="bfloat16", use_cache=True, label2id={"a": 0})
    )
    assert config.eos_token_id == [2, 7] and config.pad_token_id == 0
    assert config.dtype == "bfloat16" and config.torch_dtype is torch.bfloat16
    assert config.extra == {"use_cache": True, "label2id": {"a": 0}}
    written = config.to_dict()
    assert written["use_cache"] is True and written["label2id"] == {"a": 0}
    assert written["dtype"] == written["torch_dtype"] == "bfloat16"
    assert ModelConfig.from_dict(written) == config


def test_registry_maps_architectures() -> None:
    assert set(supported_architectures()) == {
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
    }
    for arch in supported_architectures():
        assert get_model_class(ModelConfig.from_dict(with_keys(architectures=[arch]))).__name__ == arch


@pytest.mark.parametrize("key", ["hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads"])
def test_missing_required_key(key: str) -> None:
    d = dict(BASE)
    del d[key]
    with pytest.raises(ValueError, match=f"missing required key '{key}'"):
        ModelConfig.from_dict(d)


def test_missing_architecture_and_model_type() -> None:
    d = dict(BASE)
    del d["architectures"], d["model_type"]
    with pytest.raises(ValueError, match="missing required key 'architectures'"):
        ModelConfig.from_dict(d)


def test_unknown_architecture() -> None:
    config = ModelConfig.from_dict(with_keys(architectures=["GPT2LMHeadModel"], model_type="gpt2"))
    with pytest.raises(ValueError, match="unsupported architecture 'GPT2LMHeadModel'.*LlamaForCausalLM"):
        get_model_class(config)


@pytest.mark.parametrize("rope_type", ["yarn", "dynamic", "longrope"])
def test_unsupported_rope_type(rope_type: str) -> None:
    with pytest.raises(ValueError, match=f"unsupported rope type '{rope_type}'.*llama3"):
        ModelConfig.from_dict(with_keys(rope_scaling={"rope_type": rope_type, "factor": 2.0}))


def test_rope_parameter_errors() -> None:
    with pytest.raises(ValueError, match="requires key 'factor'"):
        ModelConfig.from_dict(with_keys(rope_scaling={"type": "linear"}))
    with pytest.raises(ValueError, match="partial_rotary_factor"):
        ModelConfig.from_dict(with_keys(partial_rotary_factor=0.5))


def test_unsupported_hidden_act() -> None:
    with pytest.raises(ValueError, match="'hidden_act' 'gelu' is not supported"):
        ModelConfig.from_dict(with_keys(hidden_act="gelu"))


def test_sliding_window() -> None:
    mistral = {**BASE, "architectures": ["MistralForCausalLM"], "model_type": "mistral"}
    with pytest.raises(ValueError, match="sliding window attention is not supported.*'sliding_window'=128"):
        ModelConfig.from_dict({**mistral, "sliding_window": 128})
    # transformers' Mistral default window (4096) is shorter than its default context (131072).
    no_keys = {k: v for k, v in mistral.items() if k != "max_position_embeddings"}
    with pytest.raises(ValueError, match="sliding window attention is not supported"):
        ModelConfig.from_dict(no_keys)
    assert ModelConfig.from_dict({**mistral, "sliding_window": 512}).sliding_window == 512  # covers every position
    assert ModelConfig.from_dict({**mistral, "sliding_window": None}).sliding_window is None
    # Qwen2 keeps a window value that is off unless use_sliding_window is true.
    qwen2 = {**BASE, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "sliding_window": 128}
    assert ModelConfig.from_dict({**qwen2, "use_sliding_window": False}).sliding_window == 128
    assert ModelConfig.from_dict({**qwen2, "use_sliding_window": True, "max_window_layers": 2}).use_sliding_window
    with pytest.raises(ValueError, match="sliding window attention is not supported"):
        ModelConfig.from_dict({**qwen2, "use_sliding_window": True, "max_window_layers": 1})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"num_attention_heads": 5, "num_key_value_heads": 5},
            "'num_attention_heads' \\(5\\) must divide 'hidden_size'",
        ),
        ({"num_key_value_heads": 3}, "'num_key_value_heads' \\(3\\) must divide 'num_attention_heads'"),
        ({"hidden_size": 0}, "'hidden_size' must be >= 1"),
        ({"vocab_size": "101"}, "'vocab_size' must be an integer"),
        ({"head_dim": 15}, "'head_dim' must be even"),
        ({"rms_norm_eps": -1.0}, "'rms_norm_eps' must be a positive number"),
        ({"tie_word_embeddings": "yes"}, "'tie_word_embeddings' must be true or false"),
        ({"eos_token_id": "2"}, "'eos_token_id' must be an int"),
        ({"pad_token_id": 101}, "'pad_token_id' \\(101\\) is outside the vocabulary"),
        ({"torch_dtype": "int8"}, "'dtype' must be one of"),
    ],
)
def test_invalid_values_name_the_key(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict(with_keys(**changes))


def test_explicit_head_dim_need_not_divide_hidden() -> None:
    config = ModelConfig.from_dict(with_keys(num_attention_heads=6, num_key_value_heads=2, head_dim=24))
    assert config.head_dim == 24


def test_dataclass_rejects_unknown_fields_and_field_keys_in_extra() -> None:
    config = ModelConfig.from_dict(BASE)
    with pytest.raises(TypeError):
        ModelConfig(**{**dataclasses.asdict(config), "not_a_field": 1})
    with pytest.raises(ValueError, match="'extra' may only hold keys that are not fields"):
        dataclasses.replace(config, extra={"hidden_size": 3})


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(ValueError, match="expected a dict"):
        ModelConfig.from_dict([("hidden_size", 64)])  # type: ignore[arg-type]
