"""ModelConfig: the decoder hyper-parameters, read from and written to an HF `config.json` dict.

A config.json carries many keys that do not change the forward pass (`use_cache`, `initializer_range`, label maps,
`transformers_version`...). Those are kept verbatim in `extra` so that `to_dict` gives back a file transformers loads
as before. Keys that do change the forward pass are fields, validated on construction: a missing required key or a
value we cannot run raises ValueError naming the key.

Both RoPE spellings are read: transformers 4 (`rope_theta` + `rope_scaling`) and transformers 5 (`rope_parameters`),
with transformers' precedence (a non-null `rope_scaling` wins, a theta inside the dict wins over the top-level one).
`to_dict` writes both, so either version reads the same model.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from tao_engine.layers.rotary import normalize_rope_scaling

# model_type -> architecture, to fill in whichever of the two a config leaves out.
ARCHITECTURE_OF_MODEL_TYPE = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}

# Defaults of transformers' config class for each model_type, applied when a config.json omits the key.
_COMMON_DEFAULTS: dict[str, Any] = {
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "qk_norm": False,
    "sliding_window": None,
}
_MODEL_TYPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"bos_token_id": 1, "eos_token_id": 2},
    "mistral": {"max_position_embeddings": 4096 * 32, "sliding_window": 4096, "bos_token_id": 1, "eos_token_id": 2},
    "qwen2": {"max_position_embeddings": 32768, "attention_bias": True},  # Qwen2 always has q/k/v biases
    "qwen3": {"max_position_embeddings": 32768, "qk_norm": True, "head_dim": 128},
}

REQUIRED_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
# Keys consumed by from_dict besides the fields themselves; they may not live in `extra`.
_ALIAS_KEYS = ("rope_parameters", "torch_dtype", "partial_rotary_factor")
_FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


def model_type_defaults(model_type: str) -> dict[str, Any]:
    return {**_COMMON_DEFAULTS, **_MODEL_TYPE_DEFAULTS.get(model_type, {})}


@dataclass
class ModelConfig:
    architectures: list[str]
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None  # None: as many as query heads (no GQA)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # canonical: {"rope_type": "linear"|"llama3", ...} or None
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    hidden_act: str = "silu"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    dtype: str | None = None  # the checkpoint's dtype name ("bfloat16"...), informational
    sliding_window: int | None = None
    use_sliding_window: bool | None = None  # Qwen2/3 only: the window is off unless this is true
    initializer_range: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.architectures, list) or not self.architectures:
            raise ValueError(f"ModelConfig: 'architectures' must be a non-empty list, got {self.architectures!r}")
        if not all(isinstance(a, str) for a in self.architectures):
            raise ValueError(f"ModelConfig: 'architectures' must hold strings, got {self.architectures!r}")
        for key in (*REQUIRED_KEYS, "max_position_embeddings"):
            _check_int(key, getattr(self, key), minimum=1)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        _check_int("num_key_value_heads", self.num_key_value_heads, minimum=1)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"ModelConfig: 'num_key_value_heads' ({self.num_key_value_heads}) must divide "
                f"'num_attention_heads' ({self.num_attention_heads})"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"ModelConfig: 'num_attention_heads' ({self.num_attention_heads}) must divide 'hidden_size' "
                    f"({self.hidden_size}) when 'head_dim' is not given"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        _check_int("head_dim", self.head_dim, minimum=2)
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig: 'head_dim' must be even for rotary embeddings, got {self.head_dim}")
        for key in ("rms_norm_eps", "rope_theta", "initializer_range"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"ModelConfig: {key!r} must be a positive number, got {value!r}")
        self.rms_norm_eps = float(self.rms_norm_eps)
        self.rope_theta = float(self.rope_theta)
        self.rope_scaling = _wrap(normalize_rope_scaling, self.rope_scaling, self.max_position_embeddings)
        for key in ("tie_word_embeddings", "attention_bias", "mlp_bias", "qk_norm"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"ModelConfig: {key!r} must be true or false, got {getattr(self, key)!r}")
        if self.hidden_act != "silu":
            raise ValueError(f"ModelConfig: 'hidden_act' {self.hidden_act!r} is not supported; only 'silu' is")
        self._check_token_ids()
        if self.dtype is not None and self.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"ModelConfig: 'dtype' must be one of {_FLOAT_DTYPES} or null, got {self.dtype!r}")
        self._check_sliding_window()
        reserved = {f.name for f in dataclasses.fields(self)} | set(_ALIAS_KEYS) | {"rope_scaling", "rope_theta"}
        clash = sorted(reserved & set(self.extra))
        if clash:
            raise ValueError(f"ModelConfig: 'extra' may only hold keys that are not fields, got {clash}")

    def _check_token_ids(self) -> None:
        for key in ("bos_token_id", "pad_token_id"):
            value = getattr(self, key)
            if value is not None:
                _check_int(key, value, minimum=None)
        if self.pad_token_id is not None and not -self.vocab_size <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"ModelConfig: 'pad_token_id' ({self.pad_token_id}) is outside the vocabulary")
        eos = self.eos_token_id
        if eos is not None and not (isinstance(eos, int) and not isinstance(eos, bool)):
            if not isinstance(eos, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in eos):
                raise ValueError(f"ModelConfig: 'eos_token_id' must be an int, a list of ints or null, got {eos!r}")

    def _check_sliding_window(self) -> None:
        window = None if self.use_sliding_window is False else self.sliding_window
        if window is None:
            return
        _check_int("sliding_window", window, minimum=1)
        if self.use_sliding_window:
            # Qwen2/3 slide only in the layers listed as such (by default those from max_window_layers on).
            layer_types = self.extra.get("layer_types") or [
                "sliding_attention" if i >= self.extra.get("max_window_layers", 28) else "full_attention"
                for i in range(self.num_hidden_layers)
            ]
            if "sliding_attention" not in layer_types:
                return
        if window < self.max_position_embeddings:
            raise ValueError(
                f"ModelConfig: sliding window attention is not supported ('sliding_window'={window} is smaller "
                f"than 'max_position_embeddings'={self.max_position_embeddings}); set 'sliding_window' to null or "
                "lower 'max_position_embeddings' to the window"
            )

    @property
    def architecture(self) -> str:
        return self.architectures[0]

    @property
    def torch_dtype(self) -> torch.dtype | None:
        return None if self.dtype is None else getattr(torch, self.dtype)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Build from an HF config.json dict. Keys that are not fields are kept in `extra`."""
        if not isinstance(d, Mapping):
            raise ValueError(f"ModelConfig.from_dict: expected a dict (config.json), got {type(d).__name__}")
        rest = copy.deepcopy(dict(d))
        model_type, architectures = rest.pop("model_type", None), rest.pop("architectures", None)
        if not architectures:
            if model_type not in ARCHITECTURE_OF_MODEL_TYPE:
                raise ValueError("ModelConfig: config is missing required key 'architectures'")
            architectures = [ARCHITECTURE_OF_MODEL_TYPE[model_type]]
        if model_type is None:
            by_arch = {arch: mt for mt, arch in ARCHITECTURE_OF_MODEL_TYPE.items()}
            if not isinstance(architectures, list) or architectures[0] not in by_arch:
                raise ValueError("ModelConfig: config is missing required key 'model_type'")
            model_type = by_arch[architectures[0]]
        for key in REQUIRED_KEYS:
            if rest.get(key) is None:
                raise ValueError(f"ModelConfig: config is missing required key {key!r}")
        defaults = model_type_defaults(model_type)
        kwargs: dict[str, Any] = {"architectures": architectures, "model_type": model_type}
        kwargs.update(_pop_rope(rest, defaults["rope_theta"]))
        dtype = rest.pop("dtype", None) or rest.pop("torch_dtype", None)
        rest.pop("torch_dtype", None)
        kwargs["dtype"] = str(dtype).removeprefix("torch.") if dtype is not None else None
        nullable = {"num_key_value_heads", "head_dim", "bos_token_id", "eos_token_id", "pad_token_id"}
        nullable |= {"sliding_window", "use_sliding_window"}
        for f in dataclasses.fields(cls):
            if f.name in kwargs or f.name == "extra" or f.name not in rest:
                continue  # absent: the model type's default below, else the field default
            value = rest.pop(f.name)
            if value is None and f.name not in nullable:
                continue  # null where null means nothing: the field default
            kwargs[f.name] = value
        for key, value in defaults.items():
            if key != "rope_theta" and key not in kwargs and key not in d:
                kwargs[key] = value
        return cls(**kwargs, extra=rest)

    def to_dict(self) -> dict[str, Any]:
        """An HF-compatible config.json dict (transformers 4 and 5 both load it)."""
        out = copy.deepcopy(self.extra)
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "rope_scaling", "qk_norm", "use_sliding_window"):
                out[f.name] = copy.deepcopy(getattr(self, f.name))
        scaling = copy.deepcopy(self.rope_scaling)
        out["rope_scaling"] = scaling
        out["rope_parameters"] = {"rope_type": "default", **(scaling or {}), "rope_theta": self.rope_theta}
        out["torch_dtype"] = self.dtype
        # Written only when it differs from what the model type implies, so HF configs gain no foreign keys.
        if self.qk_norm != model_type_defaults(self.model_type)["qk_norm"]:
            out["qk_norm"] = self.qk_norm
        if self.use_sliding_window is not None:
            out["use_sliding_window"] = self.use_sliding_window
        return out


def _check_int(key: str, value: Any, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"ModelConfig: {key!r} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"ModelConfig: {key!r} must be >= {minimum}, got {value}")


def _wrap(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ValueError as e:
        raise ValueError(f"ModelConfig: {e}") from None


def _pop_rope(rest: dict[str, Any], default_theta: float) -> dict[str, Any]:
    """Consume the RoPE keys of both transformers generations -> {"rope_theta", "rope_scaling"}."""
    params, scaling = rest.pop("rope_parameters", None), rest.pop("rope_scaling", None)
    top_theta = rest.pop("rope_theta", None)
    partial = rest.pop("partial_rotary_factor", None)
    chosen = scaling or params or {}
    if not isinstance(chosen, dict):
        raise ValueError(f"ModelConfig: 'rope_scaling'/'rope_parameters' must be a dict, got {chosen!r}")
    if chosen and all(isinstance(v, dict) for v in chosen.values()):
        raise ValueError("ModelConfig: per-layer-type 'rope_parameters' are not supported")
    chosen = dict(chosen)
    if partial is not None:
        chosen.setdefault("partial_rotary_factor", partial)
    theta = chosen.pop("rope_theta", None)
    theta = theta if theta is not None else top_theta if top_theta is not None else default_theta
    return {"rope_theta": theta, "rope_scaling": chosen or None}
