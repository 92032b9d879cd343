"""`tao-engine chat`: a multi-turn chat with a model directory, streaming text as tokens arrive."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tao_engine.cli_flags import DataclassFlags
from tao_engine.engine import Engine, EngineConfig, SamplingParams

# A chat holds one conversation at a time: a small KV budget and a few sequences are plenty; float32 where the
# engine's own default ("auto" aside) is float32 too, said here so --help shows it.
ENGINE = DataclassFlags(EngineConfig(dtype="float32", kv_cache_bytes=256 * 2**20, max_num_seqs=4), ("dtype",))
# Greedy and seeded: the same question gets the same answer, as a person trying a model expects; 128 new tokens a
# turn (SamplingParams' 16 is OpenAI's legacy completion default, too short for a reply).
SAMPLING = DataclassFlags(SamplingParams(max_tokens=128, temperature=0.0, seed=0),
                          ("max_tokens", "temperature", "top_p", "seed"), names={"max_tokens": "--max-new-tokens"})


def add_chat_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="HF-layout model directory; default: bundled SmolLM2-135M-Instruct")
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--prompt", action="append", help="a user message (repeatable); none: read from stdin")
    ENGINE.add_to(p)
    SAMPLING.add_to(p)


def run_chat(args: argparse.Namespace) -> int:
    prompts = args.prompt or []
    interactive = not prompts
    if interactive and (sys.stdin is None or sys.stdin.closed):
        raise ValueError("chat: stdin is closed; pass the messages with --prompt TEXT (repeatable)")
    params = SAMPLING.build(args)
    session = ChatSession.open(args.model, ENGINE.build(args), system=args.system)
    if interactive:
        print("chat with the model; an empty line ends the session", file=sys.stderr)
    while True:
        if interactive:
            try:
                text = input("you> ")
            except EOFError:
                break
            if not text.strip():
                break
        elif prompts:
            text = prompts.pop(0)
            print(f"you> {text}")
        else:
            break
        print("model> ", end="", flush=True)
        for piece in session.reply(text, params):
            print(piece, end="", flush=True)
        print(f"\n[{session.last_stats}]", file=sys.stderr)
    return 0


@dataclass
class ChatSession:
    engine: Engine
    system: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    last_stats: str = ""

    @classmethod
    def open(cls, model_dir: str | Path | None, config: EngineConfig = ENGINE.base,
             system: str | None = None) -> ChatSession:
        from tao_engine.bundled import smollm2_dir

        path = model_dir if model_dir is not None else smollm2_dir()
        return cls(Engine(path, config), system)

    def messages(self, user_text: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history + [{"role": "user", "content": user_text}]

    def reply(self, user_text: str, params: SamplingParams = SAMPLING.base) -> Iterator[str]:
        """Stream the assistant's answer; the turn joins the history once the answer is complete."""
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
