"""A multi-turn chat with a model directory, streaming text as tokens arrive (used by `tao-engine chat`/`demo`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from tao_engine.reference_generate import stream_tokens
from tao_engine.tokenizer import Tokenizer


@dataclass
class ChatSession:
    model: nn.Module
    tokenizer: Tokenizer
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    last_stats: str = ""

    @classmethod
    def open(cls, model_dir: str | Path | None, dtype: str = "float32", system: str | None = None) -> ChatSession:
        from tao_engine.bundled import smollm2_dir
        from tao_engine.pretrained import load_pretrained

        model, tokenizer = load_pretrained(model_dir if model_dir is not None else smollm2_dir(), dtype=dtype)
        return cls(model, tokenizer, system)

    def messages(self, user_text: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history + [{"role": "user", "content": user_text}]

    def reply(
        self, user_text: str, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
        seed: int | None = 0,
    ) -> Iterator[str]:
        """Stream the assistant's answer; the turn joins the history once the answer is complete."""
        messages = self.messages(user_text)
        prompt_ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        stop = set(self.tokenizer.eos_token_ids)
        decoder = self.tokenizer.incremental_decoder(skip_special_tokens=True)
        pieces: list[str] = []
        start = time.perf_counter()
        count = 0
        for token in stream_tokens(self.model, prompt_ids, max_new_tokens, stop, temperature, top_p, seed):
            count += 1
            if token in stop:
                break
            piece = decoder.push(token)
            if piece:
                pieces.append(piece)
                yield piece
        tail = decoder.finish()
        if tail:
            pieces.append(tail)
            yield tail
        elapsed = time.perf_counter() - start
        self.last_stats = (
            f"{len(prompt_ids)} prompt tokens, {count} new tokens in {elapsed:.2f}s "
            f"({count / max(elapsed, 1e-9):.1f} tok/s)"
        )
        self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": "".join(pieces)}]
