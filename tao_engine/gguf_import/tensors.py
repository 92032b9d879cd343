"""GGUF tensors -> Hugging Face tensors: name mapping, dequantization and undoing llama.cpp's q/k row permutation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, quants

from tao_engine.gguf_import.reader import GGUFFile, TensorInfo

Q = GGMLQuantizationType
# Types `gguf.quants.dequantize` implements that this importer is tested on; anything else is refused up front.
SUPPORTED_TYPES: frozenset[int] = frozenset(
    {Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K}
)

_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# Tensors llama.cpp derives from the config: rope_freqs holds llama3 rope factors, which config.py turns back into
# `rope_scaling`; HF models recompute them, so they are not parameters.
_DERIVED = {"rope_freqs.weight"}
# llama.cpp's converter interleaves the two rotary halves of q/k rows for the Llama architecture only.
_PERMUTED_ARCHS = {"llama"}


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: where it comes from, its HF name, and the head count to un-permute rows by (0 = none)."""

    info: TensorInfo
    hf_name: str
    unpermute_heads: int = 0

    @property
    def numel(self) -> int:
        return int(np.prod(self.info.dims, dtype=np.int64))


def hf_name(gguf_name: str) -> str | None:
    """The HF parameter name for a GGUF tensor name, or None when the name is not a known parameter."""
    stem, _, kind = gguf_name.rpartition(".")
    if stem in _GLOBAL_NAMES and kind == "weight":
        return f"{_GLOBAL_NAMES[stem]}.weight"
    m = _LAYER_RE.fullmatch(gguf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{int(m.group(1))}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"
    return None


def expected_hf_names(config: dict[str, Any]) -> set[str]:
    """Every parameter name the HF class for `config` declares (lm_head only when untied)."""
    model_type = config["model_type"]
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    if not config["tie_word_embeddings"]:
        names.add("lm_head.weight")
    # Qwen2 always has q/k/v biases and no flag for them; Llama/Qwen3 bias all four projections when flagged.
    if model_type == "qwen2":
        attn_bias: tuple[str, ...] = ("q", "k", "v")
    else:
        attn_bias = ("q", "k", "v", "o") if config["attention_bias"] else ()
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        names |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
        names |= {f"{p}self_attn.{x}_proj.weight" for x in "qkvo"}
        names |= {f"{p}self_attn.{x}_proj.bias" for x in attn_bias}
        names |= {f"{p}mlp.{x}_proj.weight" for x in ("gate", "up", "down")}
        if config.get("mlp_bias"):
            names |= {f"{p}mlp.{x}_proj.bias" for x in ("gate", "up", "down")}
        if model_type == "qwen3":
            names |= {p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"}
    return names


def plan_tensors(gf: GGUFFile, config: dict[str, Any]) -> list[TensorPlan]:
    """Map and validate every tensor of `gf` against `config` before any data is touched.

    Raises GGUFImportError naming the file and tensor for an unknown name, an unsupported quantization type, a
    wrong shape, or a parameter the HF model needs but the file lacks.
    """
    plans: list[TensorPlan] = []
    permute = gf.architecture in _PERMUTED_ARCHS
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    for info in gf.tensors.values():
        if info.name in _DERIVED:
            continue
        name = hf_name(info.name)
        if name is None:
            raise gf.error(
                f"tensor {info.name!r} has no counterpart in {config['architectures'][0]}; this importer supports "
                f"dense llama/qwen2/qwen3 checkpoints only."
            )
        check_supported(gf, info)
        stem = info.name.split(".")[2] if info.name.startswith("blk.") else ""
        plans.append(TensorPlan(info, name, heads.get(stem, 0) if permute else 0))

    expected = expected_hf_names(config)
    got = {p.hf_name for p in plans}
    if missing := sorted(expected - got):
        raise gf.error(f"missing tensors for {config['architectures'][0]}: {missing[:5]} ({len(missing)} in all).")
    if unexpected := sorted(got - expected):
        raise gf.error(f"unexpected tensors for this config: {unexpected[:5]} ({len(unexpected)} in all).")
    shapes = _expected_shapes(config)
    for p in plans:
        want = shapes(p.hf_name)
        if p.info.shape != want:
            raise gf.error(f"tensor {p.info.name!r} has shape {list(p.info.shape)}, expected {list(want)} from the "
                           f"metadata.")
    return sorted(plans, key=lambda p: _sort_key(p.hf_name))


def check_supported(gf: GGUFFile, info: TensorInfo) -> None:
    if info.ggml_type not in SUPPORTED_TYPES:
        supported = ", ".join(Q(t).name for t in sorted(SUPPORTED_TYPES))
        raise gf.error(
            f"tensor {info.name!r} uses quantization type {info.type_name}, which this importer does not support "
            f"(supported: {supported}). Re-quantize the model with one of those types."
        )


def dequantize(gf: GGUFFile, info: TensorInfo) -> np.ndarray:
    """The tensor as float32 in torch order (`info.shape`)."""
    check_supported(gf, info)
    values = quants.dequantize(gf.raw(info), Q(info.ggml_type)).reshape(info.shape)
    # F32 comes back as a read-only view of the memory map; callers may modify (un-permute, cast) the result.
    return values.astype(np.float32, copy=not values.flags.writeable)


def unpermute_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Invert convert_hf_to_gguf's `permute`: per head, GGUF row 2*j+s holds HF row s*head_dim/2 + j.

    `w` is [n_heads*head_dim, ...] (a weight or a bias).
    """
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def load_tensor(gf: GGUFFile, plan: TensorPlan, dtype: torch.dtype) -> torch.Tensor:
    """Dequantize, un-permute and cast one planned tensor; the result is contiguous."""
    t = torch.from_numpy(dequantize(gf, plan.info))
    if plan.unpermute_heads:
        t = unpermute_rows(t, plan.unpermute_heads)
    return t.to(dtype).contiguous()


def _expected_shapes(config: dict[str, Any]):
    hidden, head_dim = config["hidden_size"], config["head_dim"]
    q_out, kv_out = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    inter = config["intermediate_size"]
    table = {
        "model.embed_tokens.weight": (config["vocab_size"], hidden),
        "lm_head.weight": (config["vocab_size"], hidden),
        "model.norm.weight": (hidden,),
        "input_layernorm.weight": (hidden,),
        "post_attention_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (q_out, hidden),
        "self_attn.k_proj.weight": (kv_out, hidden),
        "self_attn.v_proj.weight": (kv_out, hidden),
        "self_attn.o_proj.weight": (hidden, q_out),
        "self_attn.q_proj.bias": (q_out,),
        "self_attn.k_proj.bias": (kv_out,),
        "self_attn.v_proj.bias": (kv_out,),
        "self_attn.o_proj.bias": (hidden,),
        "self_attn.q_norm.weight": (head_dim,),
        "self_attn.k_norm.weight": (head_dim,),
        "mlp.gate_proj.weight": (inter, hidden),
        "mlp.up_proj.weight": (inter, hidden),
        "mlp.down_proj.weight": (hidden, inter),
        "mlp.gate_proj.bias": (inter,),
        "mlp.up_proj.bias": (inter,),
        "mlp.down_proj.bias": (hidden,),
    }
    return lambda name: table[name if name in table else name.split(".", 3)[3]]


def _sort_key(name: str) -> tuple[int, int, str]:
    # embeddings, then layers in numeric order, then final norm and head: the order HF checkpoints use.
    if name.startswith("model.layers."):
        return (1, int(name.split(".")[2]), name)
    return (0 if name.startswith("model.embed") else 2, 0, name)
