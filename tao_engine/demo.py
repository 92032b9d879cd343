"""`make demo`: the main job on the bundled real model.

Until the generation engine, scoring and RL issues land, the demo imports SmolLM2-135M-Instruct from its GGUF,
loads it into tao_engine's own decoder and holds a short chat with it.
"""

from __future__ import annotations

import time

DEMO_PROMPTS = (
    "What is the capital of France? Answer in one sentence.",
    "Write a SQL query that counts the rows of a table named orders.",
    "Give me three tips for writing clear Python code.",
)


def run_demo(max_new_tokens: int = 64) -> int:
    from tao_engine.bundled import smollm2_dir, smollm2_gguf_path
    from tao_engine.chat import ChatSession

    start = time.perf_counter()
    print(f"bundled model: {smollm2_gguf_path()}")
    model_dir = smollm2_dir()
    print(f"HF-layout directory: {model_dir} ({time.perf_counter() - start:.1f}s)")
    session = ChatSession.open(model_dir)
    for prompt in DEMO_PROMPTS:
        print(f"\nuser> {prompt}\nassistant> ", end="", flush=True)
        for piece in session.reply(prompt, max_new_tokens=max_new_tokens):
            print(piece, end="", flush=True)
        print(f"\n  [{session.last_stats}]")
        session.history.clear()  # independent questions: keep each prompt short
    return 0
