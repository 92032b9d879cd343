"""Tiny synthetic GGUF files for the importer tests, written with `gguf.GGUFWriter` from a random HF checkpoint the
way llama.cpp's convert_hf_to_gguf.py does (llama q/k rows permuted, weights quantized), together with the HF tensors
the import must reproduce, so name mapping, permutation and config are checked against ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, GGUFWriter, quants
from tokenizers import pre_tokenizers

Q = GGMLQuantizationType

# Byte offsets of the f16 scale fields inside one block, per type: random bytes elsewhere are valid data.
_F16_FIELDS = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,),
               Q.Q4_0: (0,), Q.Q4_1: (0, 2), Q.Q5_0: (0,), Q.Q5_1: (0, 2), Q.Q8_0: (0,),
               Q.IQ2_XXS: (0,)}
# Types gguf.quants can quantize to; the others are filled with random blocks.
QUANTIZABLE = (Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0)

# Tiny byte-level vocabulary: 256 byte symbols, a few merged tokens, two control tokens and a user-defined one.
BYTE_SYMBOLS = sorted(pre_tokenizers.ByteLevel.alphabet())
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "1 2", "Ġ 1"]
SPECIALS = [("<|begin_of_text|>", 3), ("<|end_of_text|>", 3), ("<think>", 4)]
# "Ġxyz" has no merge path: only Llama 3's ignore_merges lookup can produce it.
TOKENS = BYTE_SYMBOLS + ["Ġt", "he", "Ġthe", "in", "12", "Ġ1", "Ġxyz"] + [t for t, _ in SPECIALS]
TOKEN_TYPES = [1] * (len(TOKENS) - len(SPECIALS)) + [k for _, k in SPECIALS]
BOS_ID, EOS_ID = TOKENS.index("<|begin_of_text|>"), TOKENS.index("<|end_of_text|>")


def random_blocks(qtype: GGMLQuantizationType, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random but valid quantized data [rows, row_bytes]: random bytes, small finite f16 scales."""
    block, size = GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    for off in _F16_FIELDS[qtype]:
        scale = rng.uniform(0.001, 0.02, size=data.shape[:2]).astype(np.float16)
        data[:, :, off : off + 2] = scale.view(np.uint8).reshape(*data.shape[:2], 2)
    return data.reshape(rows, -1)


def llama_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """convert_hf_to_gguf's row interleave for Llama q/k: per head, HF row s*half+j goes to GGUF row 2*j+s."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_factors(theta: float, head_dim: int, factor: float, low: float, high: float, old_ctx: int) -> np.ndarray:
    """rope_freqs as convert_hf_to_gguf writes it for a llama3 rope_scaling (one divisor per frequency)."""
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * theta ** (i / head_dim)
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


_GGUF_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
               "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate",
               "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_name(hf: str) -> str:
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if hf in top:
        return top[hf]
    _, _, layer, rest = hf.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{_GGUF_NAMES[module]}.{kind}"


@dataclass
class TinyModel:
    path: Path
    expected: dict[str, torch.Tensor]  # the HF state dict the import must produce (float32)
    hf_config: Any  # transformers config of the ground-truth model


def head_dim_of(arch: str) -> int:
    # Qwen3's head size is not hidden/heads (like the real models), so the importer must read attention.key_length.
    return 128 if arch == "qwen3" else 64


def _hf_config(arch: str, tied: bool, rope_scaling: dict | None) -> Any:
    from transformers import AutoConfig

    rope = {"rope_type": "default", "rope_theta": 10000.0} | (rope_scaling or {})
    return AutoConfig.for_model(
        arch, vocab_size=len(TOKENS), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim_of(arch), rms_norm_eps=1e-5,
        max_position_embeddings=512, tie_word_embeddings=tied, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        rope_parameters=rope,
    )


def _metadata(arch: str, cfg: Any, pre: str) -> dict[str, Any]:
    md = {
        f"{arch}.context_length": 512, f"{arch}.embedding_length": 256, f"{arch}.feed_forward_length": 512,
        f"{arch}.block_count": 2, f"{arch}.attention.head_count": 4, f"{arch}.attention.head_count_kv": 2,
        f"{arch}.rope.freq_base": float(cfg.rope_parameters["rope_theta"]),
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-5,
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": TOKENS,
        "tokenizer.ggml.token_type": TOKEN_TYPES, "tokenizer.ggml.merges": MERGES,
        "tokenizer.ggml.bos_token_id": BOS_ID, "tokenizer.ggml.eos_token_id": EOS_ID,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    }
    if arch == "llama":
        md |= {f"{arch}.rope.dimension_count": 64, f"{arch}.vocab_size": len(TOKENS)}
    if arch == "qwen3":
        md |= {f"{arch}.attention.key_length": 128, f"{arch}.attention.value_length": 128}
    return md


def _add_kv(writer: GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_key_value(key, value, GGUFValueType.BOOL)
    elif isinstance(value, int):
        writer.add_key_value(key, value, GGUFValueType.UINT32)
    elif isinstance(value, float):
        writer.add_key_value(key, value, GGUFValueType.FLOAT32)
    elif isinstance(value, str):
        writer.add_key_value(key, value, GGUFValueType.STRING)
    else:
        sub = GGUFValueType.STRING if isinstance(value[0], str) else GGUFValueType.INT32
        writer.add_key_value(key, list(value), GGUFValueType.ARRAY, sub_type=sub)


def write_tiny_gguf(path: Path, arch: str = "llama", *, weight_type: GGMLQuantizationType = Q.F32, tied: bool = True,
                    pre: str = "llama-bpe", rope_scaling: dict | None = None, metadata: dict[str, Any] | None = None,
                    drop_keys: tuple[str, ...] = (), raw_tensors: dict[str, tuple[np.ndarray, Q]] | None = None,
                    seed: int = 0) -> TinyModel:
    """A random `arch` checkpoint (hidden 256, so K-quant rows fit) written as GGUF at `path`.

    2-D weights are stored as `weight_type`; norms stay F32 as in llama.cpp. `metadata` overrides keys (the value
    None drops one), `raw_tensors` adds or replaces tensors with raw data of a given type.
    """
    from transformers import AutoModelForCausalLM

    cfg = _hf_config(arch, tied, rope_scaling)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    state = {k: v for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    heads = {"self_attn.q_proj": 4, "self_attn.k_proj": 2} if arch == "llama" else {}

    writer = GGUFWriter(path, arch)
    md = _metadata(arch, cfg, pre) | (metadata or {})
    for key, value in md.items():
        if value is not None and key not in drop_keys:
            _add_kv(writer, key, value)
    for key in drop_keys:  # general.architecture is written by GGUFWriter itself
        writer.kv_data[0].pop(key, None)
    expected: dict[str, torch.Tensor] = {}
    for name, param in state.items():
        w = (torch.randn_like(param) * 0.05 + (1.0 if "norm" in name else 0.0)).numpy()
        qtype = weight_type if w.ndim == 2 else Q.F32
        if qtype in QUANTIZABLE:
            stored = quants.quantize(w, qtype)
        else:
            stored = random_blocks(qtype, *w.shape, rng)
        # Quantization is per row and the permutation moves whole rows, so they commute.
        expected[name] = torch.from_numpy(quants.dequantize(stored, qtype).reshape(w.shape).astype(np.float32))
        n_heads = next((h for m, h in heads.items() if name.startswith("model.layers.") and m in name), 0)
        if n_heads:
            stored = llama_permute(stored, n_heads)
        writer.add_tensor(gguf_name(name), stored, raw_dtype=qtype)
    if rope_scaling:
        factors = llama3_factors(10000.0, 64, rope_scaling["factor"], rope_scaling["low_freq_factor"],
                                 rope_scaling["high_freq_factor"], rope_scaling["original_max_position_embeddings"])
        writer.add_tensor("rope_freqs.weight", factors, raw_dtype=Q.F32)
    for name, (data, qtype) in (raw_tensors or {}).items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return TinyModel(path, expected, cfg)
