"""Session fixtures: tiny tokenizer directories of several kinds, and transformers' AutoTokenizer as reference."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from tests.tokenizer.tokenizer_builders import (
    CHATML_SPECIALS,
    CORPUS,
    LLAMA_SPECIALS,
    template,
    train_byte_level_bpe,
    write_tokenizer_dir,
)


@pytest.fixture(scope="session")
def chatml_backend() -> BackendTokenizer:
    return train_byte_level_bpe(CHATML_SPECIALS)


@pytest.fixture(scope="session")
def chatml_dir(tmp_path_factory: pytest.TempPathFactory, chatml_backend: BackendTokenizer) -> Path:
    """SmolLM2-like: ChatML specials, SmolLM2's chat template, an extra stop id in generation_config.json."""
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "add_bos_token": True,  # ignored when tokenizer.json exists, as in transformers 5
        "clean_up_tokenization_spaces": True,  # ignored for BPE models, as in transformers 5
        "model_max_length": 2048,
        "chat_template": template("smollm2.jinja"),
    }
    return write_tokenizer_dir(
        tmp_path_factory.mktemp("chatml"), chatml_backend, config, generation_config={"eos_token_id": [2, 0]}
    )


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen2.5-like: Qwen2's split, AddedToken dicts, tool tokens known only from added_tokens_decoder."""
    backend = train_byte_level_bpe(CHATML_SPECIALS, qwen_style=True)
    added = {
        str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                 "special": True}
        for i, c in enumerate(CHATML_SPECIALS)
    }
    base = backend.get_vocab_size(with_added_tokens=True)
    for offset, content in enumerate(["<tool_call>", "</tool_call>"]):
        added[str(base + offset)] = {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                                     "single_word": False, "special": False}
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "bos_token": None,
        "unk_token": None,
        "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False},
        "pad_token": "<|endoftext|>",
        "errors": "replace",
        "split_special_tokens": False,
        "chat_template": template("qwen2_5.jinja"),
    }
    return write_tokenizer_dir(tmp_path_factory.mktemp("qwen"), backend, config)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Llama-3-like: the post-processor adds <|begin_of_text|>, the template writes bos_token itself."""
    backend = train_byte_level_bpe(LLAMA_SPECIALS)
    bos = "<|begin_of_text|>"
    backend.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, backend.token_to_id(bos))]
        ),
    ])
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": "<|eot_id|>",
        "clean_up_tokenization_spaces": True,
        "chat_template": template("llama3_style.jinja"),
    }
    return write_tokenizer_dir(
        tmp_path_factory.mktemp("llama"), backend, config, generation_config={"eos_token_id": [1, 4]}
    )


@pytest.fixture(scope="session")
def wordpiece_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BERT-like WordPiece, where transformers does apply clean_up_tokenization_spaces."""
    tok = BackendTokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(cleanup=False)  # leave the clean-up to the tokenizer_config switch
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[UNK]", "[SEP]", "[PAD]"], show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]", "sep_token": "[SEP]",
              "pad_token": "[PAD]", "clean_up_tokenization_spaces": True}
    return write_tokenizer_dir(tmp_path_factory.mktemp("wordpiece"), tok, config)


@pytest.fixture(scope="session")
def metaspace_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Llama-2-like BPE: Metaspace '▁' words, <0xNN> byte fallback, a decoder that strips the first space."""
    tok = BackendTokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer)
    # Byte-fallback tokens are plain vocabulary entries (not added tokens), as in sentencepiece conversions
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    tok = BackendTokenizer.from_str(json.dumps(spec))
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>"}
    return write_tokenizer_dir(tmp_path_factory.mktemp("metaspace"), tok, config)


@pytest.fixture(scope="session")
def hf_load() -> Callable[[Path], Any]:
    """transformers' AutoTokenizer, the reference every comparison is made against."""
    transformers = pytest.importorskip("transformers")

    def load(directory: Path) -> Any:
        return transformers.AutoTokenizer.from_pretrained(str(directory))

    return load
