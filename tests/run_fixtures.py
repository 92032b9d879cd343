"""A tiny model directory (ChatML tokenizer, random weights) and a small TAO config table around it, for tests that
run `tune`, `generate` or a TAO loop end to end in seconds; scorers they can name by import path live in
tests/step_scorers.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tao_engine.models.saving import save_pretrained
from tao_engine.tokenizer import Tokenizer
from tests import helpers
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir

EOS = 2  # <|im_end|> in the ChatML tokenizer
MAX_CONTEXT = 256  # the model's max_position_embeddings: prompt + max_tokens must fit


def tiny_model_dir(root: Path, max_context: int = MAX_CONTEXT) -> Path:
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template("smollm2.jinja")}
    tokenizer = Tokenizer.from_dir(write_tokenizer_dir(root / "tok", train_byte_level_bpe(CHATML_SPECIALS), config))
    model = helpers.tiny_model(seed=0, vocab_size=tokenizer.vocab_size, eos_token_id=EOS,
                               max_position_embeddings=max_context)
    return save_pretrained(model, root / "tiny", tokenizer=tokenizer)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def tune_table(model_dir: Path, prompts: Path, output_dir: Path, steps: int = 3, scorer: str = "length",
               **scorer_params: Any) -> dict[str, Any]:
    """A TAO config table: a few tiny steps, checkpoints every step."""
    spec = {"name": scorer, **({"max_length": 8} if scorer == "length" else {}), **scorer_params}
    return {
        "model": {"path": str(model_dir)},
        "data": {"prompts": str(prompts), "prompts_per_step": 2},
        "sampling": {"n": 3, "temperature": 1.0, "max_tokens": 4, "ignore_eos": True},
        "scoring": {"scorers": [spec]},
        "optim": {"lr": 1e-2},
        "train": {"max_tokens_per_forward": 256},
        "engine": {"kv_cache_bytes": 4 * 2**20, "block_size": 16},
        "run": {"steps": steps, "output_dir": str(output_dir), "seed": 3, "checkpoint_every": 1, "keep_last": 5},
    }


def to_toml(table: dict[str, Any], path: Path) -> Path:
    """Enough TOML for tune_table's shapes (sections of scalars, one array of scorer tables)."""
    lines = []
    for section, values in table.items():
        nested = {k: v for k, v in values.items() if isinstance(v, list)}
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if k not in nested]
        for key, items in nested.items():
            for item in items:
                lines.append(f"[[{section}.{key}]]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
