"""The real SmolLM2-135M-Instruct GGUF (Q4_1) imported to an HF directory, checked against transformers' own GGUF
loading: tokenizer ids, every dequantized tensor, config values and logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from tao_engine import load_pretrained
from tests.tolerances import check

pytestmark = pytest.mark.slow
transformers = pytest.importorskip("transformers")

STRINGS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "emoji 😀🎉👍🏽 and a family 👨‍👩‍👧 in one line",
    "中文测试，日本語のテキスト、한국어 문장",
    "def f(x):\n    return x ** 2  # square\n",
    "    four spaces\t\ttwo tabs   three spaces",
    "line one\nline two\n\n\nafter blank lines\r\nwindows",
    "digits 0 7 42 123 4567 89012 3.14159 1,000,000 2024-06-01",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><repo_name>octo/tao<file_sep>main.py",
    "naïve café Straße ÉCOLE Ünïcödé ﬁ Å",
    "don't I'll we've they're she'd HE'S",
    "https://example.com/path?q=1&b=two#frag",
    "$$\\frac{a}{b} + \\sqrt{x}$$ 100% @user #tag",
    "   leading and trailing spaces   ",
    "a" * 40,
    "",
    " ",
    "\n",
    "Ελληνικά, русский, עברית, العربية",
]


@pytest.fixture(scope="module")
def reference(smollm2_transformers):
    """transformers' GGUF loading of the same file: (tokenizer, float32 model)."""
    model, tok = smollm2_transformers
    return tok, model


def test_import_is_fast_and_complete(smollm2_import: tuple[Path, float]) -> None:
    out, seconds = smollm2_import
    assert seconds < 60, f"import took {seconds:.1f}s"  # a few seconds on 2 cores; minutes would mean a regression
    names = {p.name for p in out.iterdir()}
    assert names == {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json", "special_tokens_map.json"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dir left beside it


def test_config_values(smollm2_dir: Path) -> None:
    cfg = json.loads((smollm2_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (9, 3, 64)
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (576, 1536, 30)
    assert cfg["vocab_size"] == 49152 and cfg["max_position_embeddings"] == 8192
    assert cfg["rope_theta"] == 100000.0 and cfg["rope_scaling"] is None
    assert cfg["rms_norm_eps"] == 1e-5  # the f32 in the file, restored to the decimal the model was trained with
    assert cfg["tie_word_embeddings"] is True
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 2)
    assert cfg["torch_dtype"] == "float32"
    gen = json.loads((smollm2_dir / "generation_config.json").read_text())
    assert gen["bos_token_id"] == 1 and gen["eos_token_id"] == 2


def test_tokenizer_matches_transformers_gguf(smollm2_dir: Path, reference) -> None:
    ref_tok, _ = reference
    ours = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    ours_auto = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    for text in STRINGS:
        want = ref_tok(text).input_ids
        ids = ours.encode(text).ids
        assert ids == want, text
        assert ours_auto(text).input_ids == want, text
        assert ours.decode(ids, skip_special_tokens=False) == text
    assert ours.encode("<|im_start|>").ids == [1]  # special tokens stay whole
    assert ours.decode(ours.encode("<|im_start|>hi<|im_end|>").ids) == "hi"  # and are skipped on decode


def test_numeric_characters_are_split_off_like_llama_cpp(smollm2_dir: Path) -> None:
    """tokenizer.ggml.pre = "smollm": llama.cpp (and SmolLM2's own tokenizer.json) isolate every \\p{N} character
    before the GPT-2 regex. transformers' GGUF loader skips that split, so " ²" differs there; ASCII digits agree."""
    ours = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    pieces = [p for p, _ in ours.pre_tokenizer.pre_tokenize_str(" x² 123")]
    assert pieces == ["Ġx", "Â²", "Ġ", "1", "2", "3"]
    assert ours.encode(" ²").ids == [ours.token_to_id("Ġ"), ours.token_to_id("Â²")]


def test_tokenizer_config_and_chat_template(smollm2_dir: Path, smollm2_gguf: Path) -> None:
    cfg = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert (cfg["bos_token"], cfg["eos_token"], cfg["pad_token"]) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert cfg["unk_token"] == "<|endoftext|>" and cfg["add_bos_token"] is False and cfg["model_max_length"] == 8192
    special_map = json.loads((smollm2_dir / "special_tokens_map.json").read_text())
    assert special_map["eos_token"] == "<|im_end|>"
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_every_tensor_matches_transformers_dequant(smollm2_dir: Path, reference) -> None:
    _, model = reference
    want = model.state_dict()
    got = load_file(smollm2_dir / "model.safetensors")
    assert set(got) == set(want) - {"lm_head.weight"}  # tied: the head is the embedding, not stored
    for name, tensor in got.items():
        assert tensor.dtype == torch.float32 and tensor.shape == want[name].shape, name
        check("dequantize", tensor, want[name], values=want[name])
    assert got["model.layers.0.self_attn.q_proj.weight"].abs().max() > 0


def test_transformers_loads_our_directory_with_equal_logits(smollm2_dir: Path, reference) -> None:
    ref_tok, ref_model = reference
    ours, info = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([ref_tok("The capital of France is Paris. The capital of Japan is").input_ids])
    with torch.no_grad():
        got, want = ours.eval()(ids).logits, ref_model(ids).logits
    assert want.abs().max() > 1
    # Two fp32 computations (transformers on our directory and on the GGUF): the whole-model bound of our decoder.
    model, _ = load_pretrained(smollm2_dir, dtype=torch.float32)
    check("model_outputs", got, want, model=model, outputs=lambda m: m.forward_padded(ids))
