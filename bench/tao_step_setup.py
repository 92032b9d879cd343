"""What both sides of bench_tao_step.py share: the prompts, the one reward function, and the memory probe.

The reward is label-free and computed from the completion text alone, implemented once here and wrapped for each
trainer (a `tao_engine` function scorer and a TRL reward function), so both optimize exactly the same signal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TARGET_WORDS = 24  # the concise-answer reward peaks at this many words

_TOPICS = (
    "the moon", "rain", "a library", "bicycles", "coffee", "volcanoes", "honey bees", "the ocean", "trains",
    "winter", "chess", "bread", "lighthouses", "clocks", "forests", "music", "bridges", "deserts", "paper",
    "salt", "glaciers", "maps", "owls", "copper", "gardens", "kites", "rivers", "mountains", "tea", "snow",
    "windmills", "markets",
)
_CITIES = ("Lyon", "Osaka", "Quito", "Perth", "Tromso", "Accra", "Porto", "Hanoi", "Tulsa", "Gdansk", "Cusco", "Nice")
_GOODS = ("crates of apples", "rolls of cable", "bags of cement", "boxes of tiles", "drums of oil", "sacks of rice")


def concise_reward(text: str) -> float:
    """1 at TARGET_WORDS words, falling linearly to 0 at 0 and 2 * TARGET_WORDS words."""
    words = len(re.findall(r"\S+", text))
    return max(0.0, 1.0 - abs(words - TARGET_WORDS) / TARGET_WORDS)


def tao_concise_reward(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """tao_engine function scorer (`{"name": "tao_step_setup:tao_concise_reward"}`): one reward per completion."""
    return [concise_reward(c) for c in completions]


def trl_concise_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: conversational completions arrive as [{"role": "assistant", "content": ...}]."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [concise_reward(t) for t in texts]


def _document(index: int, tokenizer: Any, tokens: int) -> str:
    """A synthetic shipping log of about `tokens` tokens (deterministic per index), sentence by sentence."""
    sentences: list[str] = []
    text = ""
    k = 0
    while len(tokenizer.encode(text, add_special_tokens=False)) < tokens:
        # One sentence is ~20 tokens: re-encoding every 4 sentences keeps this fast and within ~80 tokens.
        for _ in range(4):
            city = _CITIES[(index * 7 + k) % len(_CITIES)]
            goods = _GOODS[(index + k * 5) % len(_GOODS)]
            sentences.append(f"On day {k + 1}, the depot in {city} shipped {(index * 37 + k * 11) % 90 + 10} "
                             f"{goods} to the northern warehouse.")
            k += 1
        text = " ".join(sentences)
    return text


def build_prompts(count: int, long_context_tokens: int, tokenizer: Any) -> list[list[dict[str, str]]]:
    """`count` chat prompts; with long_context_tokens > 0 each starts with a document of about that many tokens."""
    prompts = []
    for i in range(count):
        topic = _TOPICS[i % len(_TOPICS)]
        if long_context_tokens > 0:
            doc = _document(i, tokenizer, long_context_tokens)
            content = f"{doc}\n\nIn one or two sentences, which city shipped the most, and what do you notice?"
        else:
            content = f"Describe {topic} in one or two sentences."
        prompts.append([{"role": "user", "content": content}])
    return prompts


def resident_kib(field: str) -> int:
    """VmRSS or VmHWM of this process, KiB (Linux)."""
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def reset_peak_rss() -> None:
    """Reset VmHWM to the current resident set, so the peak counts from here (Linux /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")
