"""The content hash a tuning round dedupes prompts by: the same request, typed twice with different line endings,
trailing spaces or Unicode composition, gets one hash; a different role, order or wording gets another."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

KINDS = ("chat", "completion")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_HASH = re.compile(r"[0-9a-f]{64}")


def normalize_text(text: str) -> str:
    """NFC, LF line endings, no trailing spaces on a line, no leading or trailing whitespace at all."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return _TRAILING_SPACE.sub("\n", text).strip()


def normalized_prompt(kind: str, prompt: Any) -> str:
    """Canonical JSON of a prompt: chat -> [[role, text], ...]; completion -> text or [token ids]."""
    if kind == "chat":
        if isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence):
            raise ValueError(f"prompt_hash: a chat prompt is a list of messages, got {type(prompt).__name__}")
        items: Any = []
        for i, message in enumerate(prompt):
            if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
                raise ValueError(f"prompt_hash: messages[{i}] must be a dict with a string 'content'")
            items.append([str(message.get("role", "")), normalize_text(message["content"])])
    elif kind == "completion":
        if isinstance(prompt, str):
            items = normalize_text(prompt)
        elif isinstance(prompt, Sequence) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            items = [int(t) for t in prompt]
        else:
            raise ValueError(f"prompt_hash: a completion prompt is a string or token ids, got {type(prompt).__name__}")
    else:
        raise ValueError(f"prompt_hash: kind must be one of {KINDS}, got {kind!r}")
    return json.dumps([kind, items], ensure_ascii=False, separators=(",", ":"))


def prompt_hash(kind: str, prompt: Any) -> str:
    """sha256 hex of `normalized_prompt(kind, prompt)`."""
    return hashlib.sha256(normalized_prompt(kind, prompt).encode("utf-8")).hexdigest()


def is_prompt_hash(value: Any) -> bool:
    return isinstance(value, str) and _HASH.fullmatch(value) is not None
