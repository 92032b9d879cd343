"""Build OpenAI response bodies and stream chunks from the engine's updates.

`Choices` gathers the `SampleDelta`s of one request; the functions below turn it (or one update) into the JSON
objects of `/v1/chat/completions` and `/v1/completions`. Log-probs are the model's own (temperature 1, no
filtering) for the chosen tokens; alternatives are not computed, so `top_logprobs` is always empty.
`system_fingerprint` names the model version that generated the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tao_engine.serve.engine_loop import SampleDelta
from tao_engine.tokenizer import Tokenizer


@dataclass
class Choices:
    """Everything streamed so far for the n choices of one request."""

    n: int
    texts: list[str] = field(init=False)
    token_ids: list[list[int]] = field(init=False)
    logprobs: list[list[float]] = field(init=False)
    finish_reasons: list[str | None] = field(init=False)

    def __post_init__(self) -> None:
        self.texts = [""] * self.n
        self.token_ids = [[] for _ in range(self.n)]
        self.logprobs = [[] for _ in range(self.n)]
        self.finish_reasons = [None] * self.n

    def add(self, deltas: Sequence[SampleDelta]) -> None:
        for d in deltas:
            self.texts[d.index] += d.text
            self.token_ids[d.index].extend(d.token_ids)
            self.logprobs[d.index].extend(d.logprobs)
            if d.finish_reason is not None:
                self.finish_reasons[d.index] = d.finish_reason

    @property
    def completion_tokens(self) -> int:
        return sum(len(t) for t in self.token_ids)


@dataclass(frozen=True)
class ResponseHead:
    """The fields every body and chunk of one response repeats."""

    id: str
    created: int
    model: str
    model_version: int

    def fields(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": f"tao-engine-v{self.model_version}"}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _token_text(tokenizer: Tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def chat_logprobs(tokenizer: Tokenizer, token_ids: Sequence[int], logprobs: Sequence[float]) -> dict[str, Any]:
    content = []
    for tid, lp in zip(token_ids, logprobs, strict=True):
        text = _token_text(tokenizer, tid)
        content.append({"token": text, "logprob": lp, "bytes": list(text.encode("utf-8")), "top_logprobs": []})
    return {"content": content, "refusal": None}


def completion_logprobs(
    tokenizer: Tokenizer, token_ids: Sequence[int], logprobs: Sequence[float], offset: int = 0
) -> dict[str, Any]:
    """`offset`: characters of this choice already returned (text_offset counts from the completion's start)."""
    tokens, offsets = [], []
    for tid in token_ids:
        text = _token_text(tokenizer, tid)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": list(logprobs), "top_logprobs": None, "text_offset": offsets}


def chat_completion(head: ResponseHead, choices: Choices, prompt_tokens: int, tokenizer: Tokenizer | None,
                    logprobs: bool) -> dict[str, Any]:
    return {
        **head.fields("chat.completion"),
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": choices.texts[i], "refusal": None},
                "logprobs": chat_logprobs(tokenizer, choices.token_ids[i], choices.logprobs[i])
                if logprobs and tokenizer is not None else None,
                "finish_reason": choices.finish_reasons[i],
            }
            for i in range(choices.n)
        ],
        "usage": usage(prompt_tokens, choices.completion_tokens),
    }


def text_completion(head: ResponseHead, choices: Choices, prompt_tokens: int, tokenizer: Tokenizer | None,
                    logprobs: bool) -> dict[str, Any]:
    return {
        **head.fields("text_completion"),
        "choices": [
            {
                "index": i,
                "text": choices.texts[i],
                "logprobs": completion_logprobs(tokenizer, choices.token_ids[i], choices.logprobs[i])
                if logprobs and tokenizer is not None else None,
                "finish_reason": choices.finish_reasons[i],
            }
            for i in range(choices.n)
        ],
        "usage": usage(prompt_tokens, choices.completion_tokens),
    }


class ChunkWriter:
    """The stream chunks of one response, in OpenAI's order: per choice a role chunk (chat), content chunks, one
    finish chunk; then an optional usage chunk. The caller sends `data: [DONE]` last."""

    def __init__(self, kind: str, head: ResponseHead, n: int, tokenizer: Tokenizer | None, logprobs: bool,
                 include_usage: bool) -> None:
        self.kind, self.head, self.n = kind, head, n
        self.tokenizer, self.logprobs, self.include_usage = tokenizer, logprobs, include_usage
        self._object = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self._text_offsets = [0] * n

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk = {**self.head.fields(self._object), "choices": choices}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def opening(self) -> list[dict[str, Any]]:
        if self.kind != "chat":
            return []
        return [self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None}]) for i in range(self.n)]

    def content(self, deltas: Sequence[SampleDelta]) -> list[dict[str, Any]]:
        chunks = []
        for d in deltas:
            if not d.text and not (self.logprobs and d.token_ids):
                continue
            logprobs = None
            if self.logprobs and self.tokenizer is not None:
                if self.kind == "chat":
                    logprobs = chat_logprobs(self.tokenizer, d.token_ids, d.logprobs)
                else:
                    logprobs = completion_logprobs(self.tokenizer, d.token_ids, d.logprobs,
                                                   self._text_offsets[d.index])
            self._text_offsets[d.index] += len(d.text)
            if self.kind == "chat":
                choice = {"index": d.index, "delta": {"content": d.text}, "logprobs": logprobs, "finish_reason": None}
            else:
                choice = {"index": d.index, "text": d.text, "logprobs": logprobs, "finish_reason": None}
            chunks.append(self._chunk([choice]))
        return chunks

    def closing(self, finish_reasons: Sequence[str | None], prompt_tokens: int,
                completion_tokens: int) -> list[dict[str, Any]]:
        chunks = []
        for i, reason in enumerate(finish_reasons):
            if self.kind == "chat":
                choice = {"index": i, "delta": {}, "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": i, "text": "", "logprobs": None, "finish_reason": reason}
            chunks.append(self._chunk([choice]))
        if self.include_usage:
            chunks.append({**self.head.fields(self._object), "choices": [],
                           "usage": usage(prompt_tokens, completion_tokens)})
        return chunks
