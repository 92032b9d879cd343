"""Special and added tokens as Hugging Face tokenizer directories describe them.

`tokenizer_config.json` names tokens either as plain strings or as serialized `AddedToken` dicts, lists extra added
tokens under `added_tokens_decoder`, and may defer to a legacy `special_tokens_map.json`; `generation_config.json`
adds stop ids. This module reads those files into plain values and resolves them the way transformers 5 does, so that
`Tokenizer` produces the same ids as `AutoTokenizer` on the same directory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import AddedToken
from tokenizers import Tokenizer as BackendTokenizer

# The named special tokens transformers knows; configs may add model-specific ones (any other `*_token` string key).
NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")


@dataclass(frozen=True)
class TokenSpec:
    """One added token: its text and the flags `tokenizers.AddedToken` takes."""

    content: str
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = False
    special: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.content, str) or not self.content:
            raise ValueError(f"a token's content must be a non-empty string, got {self.content!r}")
        for flag in _ADDED_TOKEN_FLAGS:
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"token {self.content!r}: flag {flag!r} must be true or false")

    def to_added_token(self) -> AddedToken:
        return AddedToken(
            self.content,
            single_word=self.single_word,
            lstrip=self.lstrip,
            rstrip=self.rstrip,
            normalized=self.normalized,
            special=self.special,
        )

    def to_json(self) -> dict[str, Any]:
        return {"content": self.content, **{flag: getattr(self, flag) for flag in _ADDED_TOKEN_FLAGS}}


def parse_token(value: Any, where: str) -> TokenSpec | None:
    """A token given as a string or as an `AddedToken` dict; `where` names the file and key for errors."""
    if value is None:
        return None
    if isinstance(value, str):
        # transformers turns a bare string into AddedToken(text, special=True), whose `normalized` is then False
        return TokenSpec(value)
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        unknown = set(value) - {"content", "__type", "id", *_ADDED_TOKEN_FLAGS}
        if unknown:
            allowed = ", ".join(("content", *_ADDED_TOKEN_FLAGS))
            raise ValueError(f"{where}: unknown AddedToken fields {sorted(unknown)}; allowed are {allowed}")
        flags = {flag: value[flag] for flag in _ADDED_TOKEN_FLAGS if flag in value}
        # tokenizers' AddedToken defaults: not special, and normalized unless special
        flags.setdefault("special", False)
        flags.setdefault("normalized", not flags["special"])
        return TokenSpec(value["content"], **flags)
    raise ValueError(
        f"{where}: expected a token string or an AddedToken object with a 'content' string, got {value!r}. "
        "Fix the file so the token is written like \"<|im_end|>\" or {\"content\": \"<|im_end|>\", ...}."
    )


def _as_special(spec: TokenSpec) -> TokenSpec:
    return spec if spec.special else TokenSpec(**{**spec.to_json(), "special": True})


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when the file does not exist."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix or delete the file") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class SpecialTokens:
    """Named special tokens (bos/eos/... plus model-specific `*_token` keys) and extra special tokens."""

    named: dict[str, TokenSpec] = field(default_factory=dict)
    extra: tuple[TokenSpec, ...] = ()

    def strings(self) -> dict[str, str]:
        """Name -> text: the variables chat templates see (bos_token, eos_token, ...)."""
        return {name: spec.content for name, spec in self.named.items()}

    def content(self, name: str) -> str | None:
        spec = self.named.get(name)
        return None if spec is None else spec.content


def read_special_tokens(
    config: Mapping[str, Any], special_tokens_map: Mapping[str, Any] | None, backend: BackendTokenizer
) -> SpecialTokens:
    """Resolve the special tokens as transformers 5 does.

    `special_tokens_map.json` is a legacy file: transformers reads it only when `tokenizer_config.json` has no
    `added_tokens_decoder`, and then its entries override the config's. A tokenizer.json padding section supplies
    the pad token when nothing else names one.
    """
    values: dict[str, tuple[Any, str]] = {}
    for key, value in config.items():
        is_model_specific = key.endswith("_token") and isinstance(value, (str, Mapping))
        if key in NAMED_SPECIAL_TOKENS or is_model_specific:
            values[key] = (value, f"tokenizer_config.json[{key!r}]")
    extra_values = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    if special_tokens_map is not None and "added_tokens_decoder" not in config:
        for key, value in special_tokens_map.items():
            if key in ("additional_special_tokens", "extra_special_tokens"):
                extra_values = [*extra_values, *value] if isinstance(value, list) else value
            elif key in NAMED_SPECIAL_TOKENS or key.endswith("_token"):
                values[key] = (value, f"special_tokens_map.json[{key!r}]")
    if "pad_token" not in values and backend.padding is not None:
        values["pad_token"] = (backend.padding["pad_token"], "tokenizer.json['padding']['pad_token']")

    named: dict[str, TokenSpec] = {}
    for key, (value, where) in values.items():
        spec = parse_token(value, where)
        if spec is not None:
            # A named token is special whatever its serialized flag says (transformers forces this too)
            named[key] = _as_special(spec)
    if isinstance(extra_values, Mapping):
        # Dict form {name: token}: the names become model-specific named tokens, as in transformers 5
        for key, value in extra_values.items():
            spec = parse_token(value, f"extra_special_tokens[{key!r}]")
            if spec is not None:
                named.setdefault(key, _as_special(spec))
        extra_values = []
    if not isinstance(extra_values, list):
        raise ValueError(f"extra_special_tokens must be a list or an object of tokens, got {extra_values!r}")
    extra: dict[str, TokenSpec] = {}  # by content: the config and the legacy map may both list a token
    for i, value in enumerate(extra_values):
        spec = parse_token(value, f"extra_special_tokens[{i}]")
        if spec is not None:
            extra.setdefault(spec.content, _as_special(spec))
    return SpecialTokens(named=named, extra=tuple(extra.values()))


def read_added_tokens_decoder(config: Mapping[str, Any]) -> dict[int, TokenSpec]:
    """`tokenizer_config.json`'s `added_tokens_decoder`: {"id": AddedToken dict} -> {id: TokenSpec}."""
    raw = config.get("added_tokens_decoder") or {}
    if not isinstance(raw, Mapping):
        raise ValueError("tokenizer_config.json['added_tokens_decoder'] must be an object of id -> AddedToken")
    decoded: dict[int, TokenSpec] = {}
    for key, value in raw.items():
        where = f"tokenizer_config.json['added_tokens_decoder'][{key!r}]"
        try:
            token_id = int(key)
        except ValueError as exc:
            raise ValueError(f"{where}: the key must be a token id") from exc
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected an AddedToken object, got {value!r}")
        spec = parse_token(value, where)
        assert spec is not None  # a Mapping with content never parses to None
        decoded[token_id] = spec
    return decoded


def apply_added_tokens(backend: BackendTokenizer, added: Mapping[int, TokenSpec], specials: SpecialTokens) -> None:
    """Register configured tokens on the backend as transformers' fast tokenizer does at load time.

    Every `added_tokens_decoder` entry is (re-)added, which also refreshes the flags of tokens already in
    tokenizer.json; then named and extra special tokens that are not added tokens yet are added as special tokens.
    """
    named_contents = {spec.content for spec in specials.named.values()}
    to_add = [_as_special(spec) if spec.content in named_contents else spec for _, spec in sorted(added.items())]
    present = {token.content for token in backend.get_added_tokens_decoder().values()} | {s.content for s in to_add}
    for spec in (*specials.named.values(), *specials.extra):
        if spec.content not in present:
            to_add.append(spec)
            present.add(spec.content)
    if to_add:
        backend.add_tokens([spec.to_added_token() for spec in to_add])


def read_generation_eos_ids(path: Path) -> tuple[int, ...]:
    """Stop ids from `generation_config.json` (`eos_token_id` is an int or a list of ints); () when absent."""
    config = read_json(path)
    if config is None or config.get("eos_token_id") is None:
        return ()
    value = config["eos_token_id"]
    ids = value if isinstance(value, list) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(f"{path}: 'eos_token_id' must be a token id or a list of token ids, got {value!r}")
    return tuple(ids)
