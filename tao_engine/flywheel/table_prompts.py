"""Inference-table rows -> the PromptRecords a TAO round trains on.

A chat row becomes its messages (role and content only: what the chat template reads); a completion row becomes its
text or its token ids. `[data] system_prompt`, when set, is put in front of a chat that has no system message, as
`load_prompts` does for a prompts file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tao_engine.rl.prompt_data import PromptRecord
from tao_engine.serve.inference_table import UnusedPrompt


def record_from_row(row: UnusedPrompt, system_prompt: str | None = None) -> PromptRecord:
    """One unused table prompt as a PromptRecord (no context: table rows carry no scorer inputs)."""
    if row.kind == "chat":
        messages = _messages(row.prompt, row.id)
        if system_prompt is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system_prompt}, *messages]
        return PromptRecord(messages)
    prompt = row.prompt
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError(f"inference row {row.id}: the completion prompt is empty")
        if system_prompt is not None:  # a system prompt turns text into a chat, as load_prompts does
            return PromptRecord([{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}])
        return PromptRecord(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return PromptRecord([int(t) for t in prompt])
    raise ValueError(f"inference row {row.id}: a completion prompt must be non-empty text or token ids")


def records_from_rows(rows: Sequence[UnusedPrompt], system_prompt: str | None = None) -> list[PromptRecord]:
    return [record_from_row(r, system_prompt) for r in rows]


def _messages(prompt: Any, row_id: int) -> list[dict[str, str]]:
    if not isinstance(prompt, list) or not prompt:
        raise ValueError(f"inference row {row_id}: a chat prompt must be a non-empty list of messages")
    out = []
    for i, message in enumerate(prompt):
        if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
            raise ValueError(f"inference row {row_id}: messages[{i}] needs a string 'content'")
        out.append({"role": str(message.get("role", "user")), "content": message["content"]})
    return out
