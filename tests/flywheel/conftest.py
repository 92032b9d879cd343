"""Fixtures: a tiny random model directory with a ChatML tokenizer, a small TAO config (TOML too) rooted in tmp_path,
and a started InferenceServer (table + reload endpoint + API key) serving that model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tao_engine import load_pretrained
from tao_engine.engine import Engine, EngineConfig
from tao_engine.models.saving import save_pretrained
from tao_engine.rl.tao_config import TAOConfig
from tao_engine.serve import InferenceServer, ServeConfig
from tao_engine.tokenizer import Tokenizer
from tests import helpers
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir

EOS = 2  # <|im_end|> in the ChatML tokenizer
API_KEY = "flywheel-test-key"
SCORER_SPEC = "tests.flywheel.flywheel_scorers:TargetTokenScorer"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template("smollm2.jinja")}
    tok_dir = write_tokenizer_dir(tmp_path_factory.mktemp("tok"), train_byte_level_bpe(CHATML_SPECIALS), config)
    tokenizer = Tokenizer.from_dir(tok_dir)
    model = helpers.tiny_model(seed=0, vocab_size=tokenizer.vocab_size, eos_token_id=EOS, max_position_embeddings=256)
    return save_pretrained(model, tmp_path_factory.mktemp("models") / "tiny", tokenizer=tokenizer)


def tao_table(model_dir: Path, output_dir: Path, steps: int = 2) -> dict[str, Any]:
    """A TAO config as a TOML-like table: a few tiny steps, the test scorer by import path."""
    return {
        "model": {"path": str(model_dir)},
        "data": {"prompts_per_step": 2},
        "sampling": {"n": 3, "temperature": 1.0, "max_tokens": 4, "ignore_eos": True},
        "scoring": {"scorers": [{"name": SCORER_SPEC}]},
        "optim": {"lr": 1e-2},
        "train": {"max_tokens_per_forward": 256},
        "engine": {"kv_cache_bytes": 4 * 2**20, "block_size": 16},
        "run": {"steps": steps, "output_dir": str(output_dir), "seed": 3},
    }


@pytest.fixture
def tao_config(model_dir: Path, tmp_path: Path) -> TAOConfig:
    return TAOConfig.from_dict(tao_table(model_dir, tmp_path / "flywheel"))


def write_toml(table: dict[str, Any], path: Path) -> Path:
    """Enough TOML for tao_table's shapes (scalars, one array of tables)."""
    lines = []
    for section, values in table.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, list):
                continue
            lines.append(f"{key} = {json.dumps(value) if not isinstance(value, bool) else str(value).lower()}")
        for key, value in values.items():
            if isinstance(value, list):
                for item in value:
                    lines.append(f"[[{section}.{key}]]")
                    lines.extend(f"{k} = {json.dumps(v)}" for k, v in item.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def start_server(model_dir: Path, tmp_path: Path) -> Iterator[Callable[[], InferenceServer]]:
    """start_server() -> a started server on a free port writing tmp_path/infer.sqlite (stopped after the test)."""
    started: list[InferenceServer] = []

    def start() -> InferenceServer:
        model, tokenizer = load_pretrained(model_dir, dtype=torch.float32)
        engine = Engine(model, EngineConfig(kv_cache_bytes=4 * 2**20, block_size=16, max_num_seqs=8),
                        tokenizer=tokenizer)
        config = ServeConfig(port=0, api_key=API_KEY, enable_reload_endpoint=True)
        server = InferenceServer(engine, config, table_path=tmp_path / "infer.sqlite", model_source=model_dir)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop(drain_timeout_s=5.0)
