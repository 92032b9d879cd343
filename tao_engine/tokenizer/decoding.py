"""Decoding helpers: transformers' space clean-up, and streaming text out of generated ids."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any, Protocol


class DecodingTokenizer(Protocol):
    """What the decoder reads of a tokenizer (tao_engine.tokenizer.Tokenizer has it)."""

    @property
    def backend(self) -> Any: ...  # the `tokenizers` library's Tokenizer

    @property
    def clean_up_tokenization_spaces(self) -> bool: ...

# transformers' clean_up_tokenization, applied in this order
_CLEANUP_REPLACEMENTS = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
    (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)


def clean_up_tokenization(text: str) -> str:
    """Drop the spaces word-piece tokenizers leave before punctuation and English contractions."""
    for old, new in _CLEANUP_REPLACEMENTS:
        text = text.replace(old, new)
    return text


class IncrementalDecoder:
    """Text for a stream of generated ids: `push` returns the newly final text, `finish` the rest.

    The concatenation of everything returned equals `tokenizer.decode(all_ids)`. Text ending in an unfinished UTF-8
    character (a byte-level token holding part of an emoji or CJK character) is held back until it completes.
    Each step decodes only a short window: the tokens since the previous complete character plus the new ones,
    with the earlier tokens as context for decoders that treat the first token specially (leading-space rules).
    When the tokenizer cleans up spaces (word-piece models), text near a space is held until no clean-up pattern
    can still change it.
    """

    def __init__(self, tokenizer: DecodingTokenizer, skip_special_tokens: bool = False) -> None:
        self._backend = tokenizer.backend
        self._skip = skip_special_tokens
        self._clean_up = tokenizer.clean_up_tokenization_spaces
        self._ids: list[int] = []
        self._start = 0  # first token of the decoding window
        self._boundary = 0  # token count at which the text last ended on a whole character
        self._consumed = 0  # characters of the window's text already passed on
        self._pending = ""  # passed-on raw text held back until clean-up can't change it
        self._finished = False

    @property
    def token_ids(self) -> list[int]:
        return list(self._ids)

    def push(self, ids: int | Iterable[int]) -> str:
        """Add generated ids; return the text they complete (possibly "")."""
        if self._finished:
            raise RuntimeError("this IncrementalDecoder is finished; make a new one for the next sequence")
        new_ids = token_id_list(ids)
        if not new_ids:
            return ""
        self._ids.extend(new_ids)
        text = self._decode(self._ids[self._start :])
        whole = len(text.rstrip("\ufffd"))  # U+FFFD at the end: bytes of a character still to come
        fresh = text[self._consumed : whole] if whole > self._consumed else ""
        self._consumed = max(self._consumed, whole)
        if whole == len(text):
            # Slide the window to the previous boundary: the tokens in between stay as context. Decoders treat the
            # first token they see specially (no joining space, stripped '▁'), so the head must render some text.
            next_start, self._boundary = self._boundary, len(self._ids)
            if next_start > self._start:
                context = self._decode(self._ids[next_start:])
                if context:
                    self._start, self._consumed = next_start, len(context)
        return self._emit(fresh, final=False)

    def finish(self) -> str:
        """The text still held back (an unfinished character decodes to U+FFFD, as in `decode`)."""
        if self._finished:
            return ""
        text = self._decode(self._ids[self._start :])
        self._finished = True
        return self._emit(text[self._consumed :], final=True)

    def _decode(self, ids: list[int]) -> str:
        return self._backend.decode(ids, skip_special_tokens=self._skip)

    def _emit(self, raw: str, final: bool) -> str:
        if not self._clean_up:
            return raw
        self._pending += raw
        cut = len(self._pending) if final else _clean_up_safe_cut(self._pending)
        out, self._pending = clean_up_tokenization(self._pending[:cut]), self._pending[cut:]
        return out


def _clean_up_safe_cut(text: str) -> int:
    """Largest prefix length after which clean-up can no longer change: every replaced pattern starts with a space
    and spans at most 4 characters, so a cut with no space in the 4 characters before it splits no pattern."""
    cut = len(text)
    while cut > 0 and " " in text[max(0, cut - 4) : cut]:
        cut -= 1
    return cut


def token_id_list(ids: Any) -> list[int]:
    """`ids` (an int, or a sequence, tensor or array of ints) as a list of Python ints; TypeError otherwise."""
    if hasattr(ids, "tolist"):  # torch tensors and numpy arrays
        ids = ids.tolist()
    if isinstance(ids, int) and not isinstance(ids, bool):
        return [ids]
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError(f"expected token ids (ints), got {ids!r}")
    out = []
    for value in ids:
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise TypeError(f"expected token ids (ints), got {value!r} in {ids!r}")
        out.append(operator.index(value))  # numpy integers become Python ints
    return out
