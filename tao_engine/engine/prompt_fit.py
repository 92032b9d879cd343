"""Whether a prompt can run on an engine as asked, checked before any work: it encodes, its token ids are in the
vocabulary, and prompt + max_tokens fits what the engine holds for one sequence (max_model_len, or the whole KV
cache when that is smaller).

The engine itself would index out of range on a bad token id, and would end a sequence that reaches its length cap
with finish reason "length" as if max_tokens had been reached: a silent cut. Callers check first and report the
prompt by name (`tao-engine generate` writes the error on that prompt's output line, `tune` names file:line).
"""

from __future__ import annotations

from typing import Any

from tao_engine.engine.prompts import PromptLike, encode_prompt


def prompt_problem(engine: Any, prompt: PromptLike, max_tokens: int) -> str | None:
    """Why `prompt` cannot run on `engine` with `max_tokens` new tokens, or None when it can."""
    try:
        _, ids = encode_prompt(prompt, engine.tokenizer)
    except ValueError as exc:
        return str(exc)
    if not ids:
        return "the prompt encodes to no tokens"
    vocab = engine.model.config.vocab_size
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        return f"token ids outside the vocabulary [0, {vocab}): {bad[:5]}"
    limit = engine.scheduler.max_seq_len
    if len(ids) + max_tokens > limit:
        return (f"{len(ids)} prompt tokens + max_tokens {max_tokens} exceed the {limit} tokens the engine holds per "
                "sequence (max_model_len, or the KV cache when smaller): shorten the prompt, lower max_tokens, or "
                "give the engine more (max_model_len, kv_cache_bytes)")
    return None
