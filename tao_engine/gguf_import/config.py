"""config.json and generation_config.json rebuilt from GGUF metadata (llama.cpp key names -> HF config fields)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tao_engine.gguf_import.reader import GGUFFile
from tao_engine.gguf_import.tensors import dequantize

# GGUF general.architecture -> (HF model class, HF model_type)
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
}
_ROPE_THETA_DEFAULT = 10000.0  # llama.cpp's value when a file states no rope.freq_base


def _clean_f32(value: float) -> float:
    """GGUF stores floats as f32, so 1e-5 reads back as 9.999999747e-06; return the shortest decimal of that f32."""
    f32 = np.float32(value)
    return float(str(f32)) if float(f32) == value else float(value)


def build_config(gf: GGUFFile, dtype: str) -> dict[str, Any]:
    """The HF config.json dict for `gf`; raises GGUFImportError for an unknown architecture or missing keys."""
    arch = gf.architecture
    if arch not in ARCHITECTURES:
        raise gf.error(
            f"unsupported architecture {arch!r} (general.architecture); supported: {sorted(ARCHITECTURES)}."
        )
    class_name, model_type = ARCHITECTURES[arch]
    key = gf.arch_key
    n_heads = gf.require(key("attention.head_count"), int)
    n_kv_heads = gf.optional(key("attention.head_count_kv"), int, n_heads)
    hidden = gf.require(key("embedding_length"), int)
    n_layers = gf.require(key("block_count"), int)
    if n_heads <= 0 or n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise gf.error(f"head counts {n_heads} (query) / {n_kv_heads} (key-value) must be positive and divide.")
    head_dim = gf.optional(key("attention.key_length"), int, hidden // n_heads)
    for other in ("attention.value_length", "rope.dimension_count"):
        if gf.optional(key(other), int, head_dim) != head_dim:
            raise gf.error(
                f"{key(other)}={gf.metadata[key(other)]} differs from the head size {head_dim}; partial rotary or "
                f"distinct value heads are not supported by {class_name}."
            )
    tensors = gf.tensors
    if "token_embd.weight" not in tensors:
        raise gf.error("tensor 'token_embd.weight' (the token embedding) is missing.")
    vocab_size = tensors["token_embd.weight"].shape[0]
    n_tokens = len(gf.get("tokenizer.ggml.tokens", ()))
    if n_tokens > vocab_size:
        raise gf.error(f"the tokenizer has {n_tokens} tokens but token_embd.weight only {vocab_size} rows.")
    rope_theta = _clean_f32(gf.optional(key("rope.freq_base"), (int, float), _ROPE_THETA_DEFAULT))

    config: dict[str, Any] = {
        "architectures": [class_name],
        "model_type": model_type,
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": gf.require(key("feed_forward_length"), int),
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": gf.require(key("context_length"), int),
        "rms_norm_eps": _clean_f32(gf.require(key("attention.layer_norm_rms_epsilon"), (int, float))),
        "rope_theta": rope_theta,
        "rope_scaling": _rope_scaling(gf, rope_theta, head_dim),
        # llama.cpp writes output.weight only when the LM head is not the embedding matrix.
        "tie_word_embeddings": "output.weight" not in tensors,
        "bos_token_id": gf.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": gf.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": gf.get("tokenizer.ggml.padding_token_id"),
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": dtype,
    }
    if model_type in ("llama", "qwen3"):
        config["attention_bias"] = "blk.0.attn_q.bias" in tensors
    if model_type == "llama":
        config["mlp_bias"] = "blk.0.ffn_up.bias" in tensors
    if model_type in ("qwen2", "qwen3"):
        config |= {"use_sliding_window": False, "sliding_window": None, "max_window_layers": n_layers}
    return config


def build_generation_config(gf: GGUFFile, config: dict[str, Any]) -> dict[str, Any]:
    """generation_config.json: bos/pad ids, and every id llama.cpp stops on (eos, end-of-turn, end-of-message)."""
    stops = [config["eos_token_id"], gf.get("tokenizer.ggml.eot_token_id"), gf.get("tokenizer.ggml.eom_token_id")]
    stops = list(dict.fromkeys(s for s in stops if s is not None))
    gen: dict[str, Any] = {"bos_token_id": config["bos_token_id"]}
    gen["eos_token_id"] = stops[0] if len(stops) == 1 else stops
    if config["pad_token_id"] is not None:
        gen["pad_token_id"] = config["pad_token_id"]
    return gen


def _rope_scaling(gf: GGUFFile, theta: float, head_dim: int) -> dict[str, Any] | None:
    kind = gf.get(gf.arch_key("rope.scaling.type"), "none")
    if kind == "linear":
        return {"rope_type": "linear", "factor": _clean_f32(gf.require(gf.arch_key("rope.scaling.factor"), float))}
    if kind == "yarn":
        return {
            "rope_type": "yarn",
            "factor": _clean_f32(gf.require(gf.arch_key("rope.scaling.factor"), float)),
            "original_max_position_embeddings": gf.require(gf.arch_key("rope.scaling.original_context_length"), int),
        }
    if kind != "none":
        raise gf.error(f"rope scaling type {kind!r} is not supported (supported: none, linear, yarn, llama3).")
    if "rope_freqs.weight" not in gf.tensors:
        return None
    info = gf.tensors["rope_freqs.weight"]
    if info.shape != (head_dim // 2,):
        raise gf.error(f"tensor 'rope_freqs.weight' has shape {list(info.shape)}, expected [{head_dim // 2}].")
    return llama3_rope_scaling(gf, dequantize(gf, info).astype(np.float64), theta, head_dim)


def llama3_rope_scaling(gf: GGUFFile, factors: np.ndarray, theta: float, head_dim: int) -> dict[str, Any] | None:
    """Recover HF's llama3 `rope_scaling` from llama.cpp's per-frequency divisors `factors` [head_dim/2].

    llama.cpp stores 1 for short wavelengths, `factor` for long ones and 1/((1-s)/factor + s) in between, where
    s = (old_ctx/wavelen - low) / (high - low). HF's formula only depends on old_ctx/(high-low) and low/(high-low),
    so a line fit of s against 1/wavelen recovers it exactly once `low` is fixed to 1 (every Llama 3.x release).
    """
    if np.allclose(factors, 1.0):
        return None
    factor = float(factors.max())
    wavelen = 2 * np.pi * theta ** (np.arange(0, head_dim, 2) / head_dim)  # [head_dim/2]
    medium = (factors > 1 + 1e-6) & (factors < factor * (1 - 1e-6))
    if medium.sum() < 2 or factor <= 1:
        raise gf.error("tensor 'rope_freqs.weight' does not follow llama3 rope scaling (need >= 2 smoothed bands).")
    smooth = (1 / factors[medium] - 1 / factor) / (1 - 1 / factor)
    slope, intercept = np.polyfit(1 / wavelen[medium], smooth, 1)  # smooth = slope/wavelen + intercept
    low = 1.0
    high = low - low / intercept
    old_ctx = slope * (high - low)
    # Snap to the round numbers releases use when the fit lands within float32 noise of them.
    old_ctx = float(round(old_ctx)) if abs(old_ctx - round(old_ctx)) < 1e-3 * old_ctx else old_ctx
    high = round(high, 4) if abs(high - round(high, 4)) < 1e-5 * high else high
    scaling = {
        "rope_type": "llama3",
        "factor": _clean_f32(factor),
        "low_freq_factor": low,
        "high_freq_factor": float(high),
        "original_max_position_embeddings": int(old_ctx) if float(old_ctx).is_integer() else old_ctx,
    }
    if not np.allclose(llama3_rope_factors(scaling, theta, head_dim), factors, rtol=1e-5, atol=0):
        raise gf.error("tensor 'rope_freqs.weight' does not follow llama3 rope scaling; cannot rebuild rope_scaling.")
    return scaling


def llama3_rope_factors(scaling: dict[str, Any], theta: float, head_dim: int) -> np.ndarray:
    """llama.cpp's rope_freqs for a llama3 `rope_scaling` (the forward of `llama3_rope_scaling`), float64."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    wavelen = 2 * np.pi * theta ** (np.arange(0, head_dim, 2) / head_dim)
    smooth = (old_ctx / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, mid))
