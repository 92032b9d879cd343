"""tokenizer.json, tokenizer_config.json and special_tokens_map.json rebuilt from GGUF tokenizer metadata.

Only byte-level BPE vocabularies (`tokenizer.ggml.model == "gpt2"`: Llama 3, Qwen2/3, SmolLM, ...) are rebuilt. The
pre-tokenizer is chosen from `tokenizer.ggml.pre` to match the split llama.cpp applies for that name, which is the
split the merges were learned with; an unknown name falls back to the GPT-2 split with a warning.
"""

from __future__ import annotations

import json
import warnings
from enum import IntEnum
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from tao_engine.gguf_import.reader import GGUFFile

SUPPORTED_TOKENIZER_MODELS = ("gpt2",)


class TokenType(IntEnum):
    """llama.cpp's `tokenizer.ggml.token_type` values."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2 is Llama 3's split with single digits.
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")

# tokenizer.ggml.pre -> pre-tokenizer family, following the names llama.cpp's vocab loader groups together.
_PRE_FAMILIES: dict[str, str] = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"), "llama3"),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), "qwen2"),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone"), "digits_gpt2"),
    **dict.fromkeys(("gpt-2", "gpt2", "phi-2", "roberta-bpe", "jais", "poro-chat", "viking"), "gpt2"),
}


def _pre_tokenizer(family: str) -> pre_tokenizers.PreTokenizer:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if family in ("llama3", "qwen2"):
        split = _LLAMA3_SPLIT if family == "llama3" else _QWEN2_SPLIT
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"), byte_level])
    gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)  # the built-in regex is GPT-2's
    if family == "digits_gpt2":
        # llama.cpp splits every numeric character off first ("\p{N}"), then applies the GPT-2 regex.
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), gpt2])
    return gpt2


def _byte_spelling() -> dict[int, str]:
    """byte -> the printable character byte-level BPE spells it with (GPT-2's bytes_to_unicode)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    spelled = {b: chr(b) for b in keep}
    for i, b in enumerate(b for b in range(256) if b not in spelled):
        spelled[b] = chr(256 + i)
    return spelled


def build_tokenizer_files(gf: GGUFFile, model_max_length: int) -> dict[str, str]:
    """File name -> JSON text for tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    tok_model = gf.require("tokenizer.ggml.model", str)
    if tok_model not in SUPPORTED_TOKENIZER_MODELS:
        raise gf.error(
            f"tokenizer model {tok_model!r} (tokenizer.ggml.model) is not supported; supported: "
            f"{list(SUPPORTED_TOKENIZER_MODELS)} (byte-level BPE). SentencePiece ('llama') vocabularies are not "
            f"rebuilt; use the original HF tokenizer files for this model."
        )
    tokens: list[str] = gf.require("tokenizer.ggml.tokens", list)
    merges: list[str] = gf.require("tokenizer.ggml.merges", list)
    types: list[int] = gf.get("tokenizer.ggml.token_type") or [TokenType.NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise gf.error(f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens.")

    pre_name = gf.get("tokenizer.ggml.pre", "default")
    family = _PRE_FAMILIES.get(pre_name)
    if family is None:
        warnings.warn(
            f"{gf.path}: unknown tokenizer.ggml.pre {pre_name!r}; falling back to the GPT-2 split, which may "
            f"tokenize some text differently from llama.cpp. Known: {sorted(_PRE_FAMILIES)}.",
            stacklevel=2,
        )
        family = "gpt2"

    tokenizer = _build_tokenizer(gf, tokens, merges, types, family)
    special = _special_tokens(gf, tokens)
    # llama.cpp adds BOS for Llama-3-style vocabularies that do not state it; other BPE vocabularies do not.
    add_bos = bool(gf.get("tokenizer.ggml.add_bos_token", family == "llama3"))
    add_eos = bool(gf.get("tokenizer.ggml.add_eos_token", False))
    tokenizer.post_processor = _post_processor(gf, tokens, add_bos, add_eos)

    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
    }
    if (template := _chat_template(gf)) is not None:
        config["chat_template"] = template
    special_map = {k: v for k, v in special.items() if v is not None}
    return {
        "tokenizer.json": tokenizer.to_str(pretty=True),
        "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False),
        "special_tokens_map.json": json.dumps(special_map, indent=2, ensure_ascii=False),
    }


def _build_tokenizer(gf: GGUFFile, tokens: list[str], merges: list[str], types: list[int], family: str) -> Tokenizer:
    spelling = _byte_spelling()
    alphabet = set(spelling.values())
    added_types = (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)
    vocab: dict[str, int] = {}
    for i, (token, kind) in enumerate(zip(tokens, types, strict=True)):
        # Regular tokens are stored byte-spelled; a rare converter writes one raw, so spell it the way BPE will
        # produce it. Added tokens keep their raw text: they are matched in the input before byte mapping.
        if kind not in added_types and not set(token) <= alphabet:
            token = "".join(spelling[b] for b in token.encode("utf-8"))
        if token in vocab:
            warnings.warn(f"{gf.path}: token {token!r} appears at ids {vocab[token]} and {i}; id {i} wins "
                          f"(as in llama.cpp).", stacklevel=3)
        vocab[token] = i
    pairs: list[tuple[str, str]] = []
    for m in merges:
        left, sep, right = m.partition(" ")
        if not sep or not left or not right:
            raise gf.error(f"tokenizer.ggml.merges entry {m!r} is not of the form 'left right'.")
        pairs.append((left, right))
    # Llama 3's tokenizer looks a whole pre-token up in the vocabulary before merging (llama.cpp's ignore_merges).
    bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=family == "llama3", fuse_unk=False, byte_fallback=False)
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = _pre_tokenizer(family)
    tokenizer.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types, strict=True)
               if k in (TokenType.CONTROL, TokenType.UNKNOWN)]
    user = [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types, strict=True)
            if k == TokenType.USER_DEFINED]
    tokenizer.add_special_tokens(special)
    tokenizer.add_tokens(user)
    return tokenizer


def _token(gf: GGUFFile, tokens: list[str], key: str) -> str | None:
    token_id = gf.get(key)
    if token_id is None:
        return None
    if not isinstance(token_id, int) or not 0 <= token_id < len(tokens):
        raise gf.error(f"{key}={token_id!r} is not a token id (the vocabulary has {len(tokens)} tokens).")
    return tokens[token_id]


def _special_tokens(gf: GGUFFile, tokens: list[str]) -> dict[str, str | None]:
    keys = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unknown", "pad_token": "padding"}
    return {name: _token(gf, tokens, f"tokenizer.ggml.{k}_token_id") for name, k in keys.items()}


def _post_processor(gf: GGUFFile, tokens: list[str], add_bos: bool, add_eos: bool) -> processors.PostProcessor:
    byte_level = processors.ByteLevel(trim_offsets=False)
    if not add_bos and not add_eos:
        return byte_level
    ends: dict[str, tuple[str, int]] = {}
    for flag, kind in ((add_bos, "bos"), (add_eos, "eos")):
        key = f"tokenizer.ggml.{kind}_token_id"
        if flag:
            if _token(gf, tokens, key) is None:
                raise gf.error(f"tokenizer.ggml.add_{kind}_token is set but {key} is missing.")
            ends[kind] = (tokens[gf.get(key)], gf.get(key))
    # [BOS] $A [EOS] for one sequence, and the same again (type id 1) for the second of a pair.
    single = [*(["bos"] if add_bos else []), "$A", *(["eos"] if add_eos else [])]
    single = [ends[p][0] if p in ends else p for p in single]
    pair = single + [f"{p}:1" if p != "$A" else "$B:1" for p in single]
    template = processors.TemplateProcessing(single=single, pair=pair, special_tokens=list(set(ends.values())))
    return processors.Sequence([byte_level, template])


def _chat_template(gf: GGUFFile) -> str | list[dict[str, str]] | None:
    """`tokenizer.chat_template`, plus named variants (`tokenizer.chat_template.<name>`) as HF's list form."""
    default = gf.get("tokenizer.chat_template")
    prefix = "tokenizer.chat_template."
    named = {k[len(prefix):]: v for k, v in gf.metadata.items() if k.startswith(prefix) and isinstance(v, str)}
    if not named:
        return default
    entries = [{"name": "default", "template": default}] if default is not None else []
    return entries + [{"name": n, "template": t} for n, t in sorted(named.items())]
