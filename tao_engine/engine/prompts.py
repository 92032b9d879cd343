"""Turn what a caller passes as prompts (raw text, token ids, chat messages) into token ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tao_engine.tokenizer import Tokenizer

# One prompt: raw text, token ids, or a chat (a list of {"role", "content"} messages).
PromptLike = str | Sequence[int] | Sequence[dict[str, Any]]


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    )


def _is_chat(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, dict) for m in value)


def as_prompt_list(prompts: PromptLike | Sequence[PromptLike]) -> list[PromptLike]:
    """A single prompt (text, token ids or one chat) or a list of them -> a list of prompts."""
    if isinstance(prompts, str) or _is_token_ids(prompts) or _is_chat(prompts):
        return [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError(
            "prompts: give a string, a list of token ids, a chat (list of {'role', 'content'} dicts) or a non-empty "
            f"list of those; got {type(prompts).__name__}"
        )
    return list(prompts)


def encode_prompt(prompt: PromptLike, tokenizer: Tokenizer | None, index: int = 0) -> tuple[str | None, list[int]]:
    """(prompt text or None, token ids). Text is encoded with the tokenizer's special tokens (its BOS rule); a chat
    is rendered by the chat template with the generation prompt."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError(
                f"prompts[{index}]: a text prompt needs a tokenizer; pass token ids or give the engine one"
            )
        return prompt, tokenizer.encode(prompt, add_special_tokens=True)
    if _is_token_ids(prompt):
        return None, [int(t) for t in prompt]
    if _is_chat(prompt):
        if tokenizer is None:
            raise ValueError(f"prompts[{index}]: chat messages need a tokenizer with a chat template")
        text = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
        return text, tokenizer.encode(text, add_special_tokens=False)
    raise ValueError(
        f"prompts[{index}]: expected a string, a non-empty list of token ids or a list of chat messages, got "
        f"{type(prompt).__name__} {str(prompt)[:60]!r}"
    )
