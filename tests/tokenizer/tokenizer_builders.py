"""Builders for tiny tokenizers made in code (no hub downloads) and saved as Hugging Face directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as BackendTokenizer

TEMPLATES = Path(__file__).parent / "templates"
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

CORPUS = [
    "Hello world, this is a small test corpus for a tiny tokenizer.",
    "The quick brown fox jumps over the lazy dog. What's up? Isn't it great!",
    "def add(a, b):\n    return a + b  # sum\n\nclass Foo:\n    pass\n",
    "for (int i = 0; i < n; ++i) { total += values[i]; }",
    "你好，世界！今天天气很好。日本語のテキストも少しあります。",
    "Emoji: 😀 🎉 👍🏽 ❤️ and more text after them.",
    "Ünïcödé çhäracters: naïve café résumé, Straße, Ελληνικά, русский.",
    "   leading spaces, trailing spaces   \n\n\ttabs\tand newlines\n",
    "Numbers 0123456789 3.14159 -42 1e-5 and URLs https://example.com/a?b=c",
]

# Varied strings for encode/decode parity: unicode, code, whitespace runs, special tokens inside text.
SAMPLES = [
    "Hello world",
    "",
    " ",
    "  leading and trailing  ",
    "multiple    spaces     and\t\ttabs",
    "line one\nline two\r\nline three\n\n\n",
    "naïve café résumé Straße",
    "日本語のテキストと中文混合",
    "emoji 😀🎉👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
    "def f(x):\n    return x ** 2  # square\n",
    "if (a && b) { return c[i]; } else { x->y = *p; }",
    "<|im_start|>user\nhi there<|im_end|>\n",
    "<|im_start|><|im_end|><|endoftext|>",
    "text<|im_end|>more text",
    "1234567890 3.14159 -42 1e-10",
    "URL: https://example.com/path?q=1&r=2#frag",
    "math ∑ ∫ √ ≤ ≥ ≠ ∞ and arrows → ⇒",
    "mixed 中文 and English 和 😀 together",
    "zero\u200bwidth and\u00a0nbsp",
    "quotes \"'` backslash \\ done. Isn't it? They're here!",
    "Arabic مرحبا Hebrew שלום",
    "a" * 60,
]


# Qwen2's pre-tokenizer split (digits one by one, letters with one leading non-letter, ...)
QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def train_byte_level_bpe(
    special_tokens: list[str], vocab_size: int = 420, qwen_style: bool = False
) -> BackendTokenizer:
    """A GPT-2-style byte-level BPE (or Qwen2-style: NFC and Qwen's split); any text round-trips."""
    tok = BackendTokenizer(models.BPE())
    if qwen_style:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    return tok


def write_tokenizer_dir(
    directory: Path,
    backend: BackendTokenizer,
    config: dict[str, Any],
    *,
    special_tokens_map: dict[str, Any] | None = None,
    generation_config: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    backend.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), "utf-8")
    if special_tokens_map is not None:
        (directory / "special_tokens_map.json").write_text(json.dumps(special_tokens_map), "utf-8")
    if generation_config is not None:
        (directory / "generation_config.json").write_text(json.dumps(generation_config), "utf-8")
    for name, text in (files or {}).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text, "utf-8")
    return directory


def template(name: str) -> str:
    return (TEMPLATES / name).read_text("utf-8")
