"""The conversation a completion answers, for the scorers that re-render it (reward model, judges, self-certainty).

Scorers receive prompts as strings, and a caller may hand over text the policy's chat template already rendered
(control tokens and all). Re-wrapping that in another chat would nest conversations, so these scorers also read
the optional context `prompt_messages`: per item, the chat messages before the completion (a list of
{"role", "content"} dicts, e.g. the rollout's chat prompt). Given, they use it; absent (or None for an item), the
prompt string is taken as one user turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

CONTEXT_KEY = "prompt_messages"


def task_messages(prompt: str, messages: Any, where: str) -> list[dict[str, Any]]:
    """The chat before the completion: `messages` when given (validated), else [{"role": "user", "content": prompt}]."""
    if messages is None:
        return [{"role": "user", "content": prompt}]
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError(f"{where}: context {CONTEXT_KEY!r} must hold a non-empty list of chat messages per item, "
                         f"got {type(messages).__name__}")
    out = []
    for m in messages:
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: context {CONTEXT_KEY!r}: each message needs str 'role' and 'content', "
                             f"got {m!r}")
        out.append(dict(m))
    return out


def task_text(prompt: str, messages: Any, where: str) -> str:
    """The task as a judge should read it: the user's text for a single user turn; otherwise each message as a
    "role: content" block (a system prompt or earlier turns are part of the task)."""
    chat = task_messages(prompt, messages, where)
    if len(chat) == 1 and chat[0]["role"] == "user":
        return chat[0]["content"]
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in chat)


def per_item(context: Mapping[str, Any], count: int, where: str) -> list[Any]:
    """Context `prompt_messages` as one entry per item (None where absent)."""
    values = context.get(CONTEXT_KEY)
    if values is None:
        return [None] * count
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != count:
        raise ValueError(f"{where}: context {CONTEXT_KEY!r} must have one entry per item ({count})")
    return list(values)
