"""Turn what a caller passes as prompts (raw text, token ids, chat messages) into token ids.

The engine sends text as it is (OpenAI's /v1/completions semantics). Prompt files are another matter: an instruct
model given a question as raw text, without its chat template, rambles or loops, and a user writing
`{"prompt": "..."}` means a question. So where prompts come from a file (tune, probe, generate), `as_user_turn`
makes a plain-text prompt one user turn for the chat template, unless the `chat_template` switch is off.
"""

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


def has_chat_template(tokenizer: Tokenizer | None) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def as_user_turn(prompt: PromptLike, tokenizer: Tokenizer | None, chat_template: bool) -> PromptLike:
    """A plain-text prompt as a single user turn, for the chat template to render, when `chat_template` is on and the
    tokenizer has a template; chats, token ids and (switch off) text are returned as they are."""
    if isinstance(prompt, str) and chat_template and has_chat_template(tokenizer):
        return [{"role": "user", "content": prompt}]
    return prompt


def plain_prompt_rendering(tokenizer: Tokenizer | None, chat_template: bool, switch_off: str, switch_on: str) -> str:
    """One line saying how plain-text prompts reach the model, printed at startup; `switch_off` / `switch_on`: how
    the user changes it, e.g. "[data] chat_template = false"."""
    if not has_chat_template(tokenizer):
        return "plain-text prompts are sent as raw text (the model has no chat template)"
    if chat_template:
        return f"plain-text prompts are rendered by the model's chat template as one user turn ({switch_off}: raw text)"
    return f"plain-text prompts are sent as raw text ({switch_on}: one user turn of the chat template)"
