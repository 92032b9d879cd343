"""Exploration prompt templates: the inference-time question wrapped in a costlier way of asking it.

A template is plain text with placeholders substituted literally (never `str.format`, so braces in a user's prompt
are safe): `{prompt}` the inference-time question, and for refine `{draft}` and `{critique}`. For a chat prompt the
template replaces the content of the last user message (system and earlier turns are kept); a text prompt becomes
the rendered text. Token-id prompts cannot be templated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tao_engine.engine.prompts import PromptLike

REASON_TEMPLATES: dict[str, str] = {
    "step_by_step": (
        "{prompt}\n\nThink step by step. When you are done, write the final answer on its own line after "
        "'Answer:'."
    ),
    "plan_then_answer": (
        "{prompt}\n\nFirst write a short plan, then carry it out. End with the final answer on its own line after "
        "'Answer:'."
    ),
}
DEFAULT_CRITIQUE_TEMPLATE = (
    "Question:\n{prompt}\n\nDraft answer:\n{draft}\n\nList the mistakes and omissions of the draft answer, briefly."
)
DEFAULT_REVISE_TEMPLATE = (
    "Question:\n{prompt}\n\nDraft answer:\n{draft}\n\nCritique:\n{critique}\n\nWrite the corrected answer. Put the "
    "final answer on its own line after 'Answer:'."
)


def reason_template_text(name_or_text: str) -> str:
    """A built-in reason template by name, or the caller's own template (which must hold {prompt})."""
    if not isinstance(name_or_text, str) or not name_or_text:
        raise ValueError(f"[exploration] reason_template must be a non-empty string, got {name_or_text!r}")
    if name_or_text in REASON_TEMPLATES:
        return REASON_TEMPLATES[name_or_text]
    if "{prompt}" not in name_or_text:
        raise ValueError(
            f"[exploration] reason_template {name_or_text[:40]!r} is neither a built-in "
            f"({sorted(REASON_TEMPLATES)}) nor a template holding {{prompt}}"
        )
    return name_or_text


def check_template(name: str, text: str, placeholders: Sequence[str]) -> None:
    if not isinstance(text, str) or not text:
        raise ValueError(f"[exploration] {name} must be a non-empty string, got {text!r}")
    missing = [p for p in placeholders if p not in text]
    if missing:
        raise ValueError(f"[exploration] {name} must hold the placeholder(s) {missing}")


def prompt_text(prompt: PromptLike, strategy: str = "") -> str:
    """The question a template wraps: the text itself, or the last user message of a chat."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, Mapping) for m in prompt):
        for message in reversed(prompt):
            if message.get("role") == "user":
                return str(message.get("content", ""))
        raise ValueError(f"exploration {strategy!r}: the chat has no user message to wrap in a template")
    raise ValueError(
        f"exploration {strategy!r} needs text or chat prompts to build its exploration prompt; token-id prompts "
        "can only use strategy 'plain'"
    )


def render(prompt: PromptLike, template: str, strategy: str = "", **fields: str) -> PromptLike:
    """The exploration prompt: `template` with {prompt} (and any `fields`) substituted, in the prompt's own form."""
    text = template.replace("{prompt}", prompt_text(prompt, strategy))
    for key, value in fields.items():
        text = text.replace("{" + key + "}", value)
    if isinstance(prompt, str):
        return text
    messages: list[dict[str, Any]] = [dict(m) for m in prompt]  # type: ignore[union-attr]
    last_user = max(i for i, m in enumerate(messages) if m.get("role") == "user")
    messages[last_user]["content"] = text
    return messages
