"""tokenizer.json rebuilt from tiny synthetic GGUF vocabularies: pre-tokenizer per `tokenizer.ggml.pre`, BOS handling,
added tokens by token type, chat templates, and agreement with transformers' GGUF tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from tao_engine.gguf_import import import_gguf
from tests.gguf_import.synthetic import BOS_ID, TOKENS

transformers = pytest.importorskip("transformers")

TEXTS = ["the thin 12 1234 x", "  the\n\nthe\tin", "<think>the</think> 12", "héllo wörld 😀", "", "thethe 1 12 123"]


def _import(tiny_gguf, tmp_path: Path, **kw) -> tuple[Path, Path]:
    model = tiny_gguf(**kw)
    return model.path, import_gguf(model.path, tmp_path / "out")


def _pieces(out: Path, text: str) -> list[str]:
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    return [p for p, _ in tok.pre_tokenizer.pre_tokenize_str(text)]


# "smollm" is left out: this vocabulary merges digits, which a SmolLM vocabulary never does, and transformers' GGUF
# loader skips the digit split llama.cpp applies for it (see test_import_smollm2.py for the real vocabulary).
@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2"])
def test_matches_transformers_gguf_tokenizer(tiny_gguf, tmp_path: Path, pre: str) -> None:
    src, out = _import(tiny_gguf, tmp_path, pre=pre)
    ref = transformers.AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    ours = Tokenizer.from_file(str(out / "tokenizer.json"))
    ours_auto = transformers.AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        want = ref(text).input_ids
        assert want[0] == BOS_ID  # tokenizer.ggml.add_bos_token is set in these files
        assert ours.encode(text).ids == want, text
        assert ours_auto(text).input_ids == want, text
        assert ours.decode(ours.encode(text).ids) == text


def test_digit_grouping_follows_the_pre_tokenizer_name(tiny_gguf, tmp_path: Path) -> None:
    _, llama3 = _import(tiny_gguf, tmp_path / "a", pre="llama-bpe")
    _, qwen2 = _import(tiny_gguf, tmp_path / "b", pre="qwen2")
    _, smollm = _import(tiny_gguf, tmp_path / "c", pre="smollm")
    assert _pieces(llama3, "x 1234567") == ["x", "Ġ", "123", "456", "7"]
    assert _pieces(qwen2, "x 1234567") == ["x", "Ġ", "1", "2", "3", "4", "5", "6", "7"]
    assert _pieces(smollm, "x 12") == ["x", "Ġ", "1", "2"]
    # Llama 3 keeps a newline run apart from the following word; GPT-2 style splits differ on "'S".
    assert _pieces(llama3, "a\n\nb HE'S") == ["a", "ĊĊ", "b", "ĠHE", "'S"]


def test_llama3_looks_whole_pieces_up_before_merging(tiny_gguf, tmp_path: Path) -> None:
    """llama.cpp sets ignore_merges for Llama 3 vocabularies: " xyz" is a token although no merge builds it."""
    xyz = TOKENS.index("Ġxyz")
    _, llama3 = _import(tiny_gguf, tmp_path / "a", pre="llama-bpe")
    _, qwen2 = _import(tiny_gguf, tmp_path / "b", pre="qwen2")
    assert Tokenizer.from_file(str(llama3 / "tokenizer.json")).encode(" xyz").ids == [BOS_ID, xyz]
    assert xyz not in Tokenizer.from_file(str(qwen2 / "tokenizer.json")).encode(" xyz").ids


def test_added_tokens_follow_token_types(tiny_gguf, tmp_path: Path) -> None:
    _, out = _import(tiny_gguf, tmp_path)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    added = {t.content: t for t in tok.get_added_tokens_decoder().values()}
    assert added["<|begin_of_text|>"].special and added["<|end_of_text|>"].special  # CONTROL
    assert not added["<think>"].special  # USER_DEFINED: matched whole, but kept on decode
    ids = tok.encode("<think>the<|end_of_text|>").ids
    assert ids[:2] == [BOS_ID, TOKENS.index("<think>")] and ids[-1] == TOKENS.index("<|end_of_text|>")
    assert tok.decode(ids) == "<think>the"  # control tokens skipped, the user-defined one kept
    assert tok.get_vocab_size() == len(TOKENS)


def test_tokenizer_config_files(tiny_gguf, tmp_path: Path) -> None:
    _, out = _import(tiny_gguf, tmp_path, metadata={"tokenizer.chat_template.tool_use": "{{ tools }}"})
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert cfg["bos_token"] == "<|begin_of_text|>" and cfg["eos_token"] == "<|end_of_text|>"
    assert cfg["add_bos_token"] is True and cfg["add_eos_token"] is False and cfg["model_max_length"] == 512
    assert "unk_token" in cfg and cfg["unk_token"] is None and cfg["pad_token"] is None
    default = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert cfg["chat_template"] == [{"name": "default", "template": default},
                                    {"name": "tool_use", "template": "{{ tools }}"}]
    assert json.loads((out / "special_tokens_map.json").read_text()) == {"bos_token": "<|begin_of_text|>",
                                                                         "eos_token": "<|end_of_text|>"}
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen == {"bos_token_id": BOS_ID, "eos_token_id": TOKENS.index("<|end_of_text|>")}
    auto = transformers.AutoTokenizer.from_pretrained(out)
    assert auto.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "hi"


def test_end_of_turn_ids_join_generation_eos(tiny_gguf, tmp_path: Path) -> None:
    eot = TOKENS.index("<think>")
    _, out = _import(tiny_gguf, tmp_path, metadata={"tokenizer.ggml.eot_token_id": eot})
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [TOKENS.index("<|end_of_text|>"), eot]


def test_unknown_pre_tokenizer_warns_and_uses_gpt2_split(tiny_gguf, tmp_path: Path) -> None:
    model = tiny_gguf(pre="brand-new-pre")
    with pytest.warns(UserWarning, match="brand-new-pre"):
        out = import_gguf(model.path, tmp_path / "out")
    assert _pieces(out, "x 1234 HE'S") == ["x", "Ġ1234", "ĠHE", "'", "S"]
