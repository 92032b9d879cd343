"""A multi-turn chat with a model directory, streaming text as tokens arrive (used by `tao-engine chat`/`demo`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tao_engine.engine import Engine, EngineConfig, SamplingParams

# A chat holds one conversation at a time: a small KV budget is plenty.
CHAT_KV_BYTES = 256 * 2**20


@dataclass
class ChatSession:
    engine: Engine
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    last_stats: str = ""

    @classmethod
    def open(cls, model_dir: str | Path | None, dtype: str = "float32", system: str | None = None) -> ChatSession:
        from tao_engine.bundled import smollm2_dir

        path = model_dir if model_dir is not None else smollm2_dir()
        return cls(Engine(path, EngineConfig(dtype=dtype, kv_cache_bytes=CHAT_KV_BYTES, max_num_seqs=4)), system)

    def messages(self, user_text: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history + [{"role": "user", "content": user_text}]

    def reply(
        self, user_text: str, max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
        seed: int | None = 0,
    ) -> Iterator[str]:
        """Stream the assistant's answer; the turn joins the history once the answer is complete."""
        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
        start = time.perf_counter()
        shown = 0
        output = None
        for output in self.engine.stream([self.messages(user_text)], params):
            text = output.samples[0].text
            if len(text) > shown:
                yield text[shown:]
                shown = len(text)
        assert output is not None
        elapsed = time.perf_counter() - start
        count = len(output.samples[0].token_ids)
        self.last_stats = (
            f"{len(output.prompt_token_ids)} prompt tokens, {count} new tokens in {elapsed:.2f}s "
            f"({count / max(elapsed, 1e-9):.1f} tok/s)"
        )
        self.history += [{"role": "user", "content": user_text},
                         {"role": "assistant", "content": output.samples[0].text}]
