"""Fixtures: tiny random model directories (two weight sets, one tokenizer) and a server factory on a free port."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tao_engine import load_pretrained
from tao_engine.engine import Engine, EngineConfig
from tao_engine.models.saving import save_pretrained
from tao_engine.serve import InferenceServer, ServeConfig
from tao_engine.tokenizer import Tokenizer
from tests import helpers
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir

EOS = 2  # <|im_end|> in the ChatML tokenizer
MAX_CONTEXT = 256


def _model_dir(root: Path, tokenizer: Tokenizer, seed: int) -> Path:
    model = helpers.tiny_model(seed=seed, vocab_size=tokenizer.vocab_size, eos_token_id=EOS,
                               max_position_embeddings=MAX_CONTEXT)
    return save_pretrained(model, root / f"tiny-seed{seed}", tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template("smollm2.jinja")}
    directory = write_tokenizer_dir(tmp_path_factory.mktemp("tok"), train_byte_level_bpe(CHATML_SPECIALS), config)
    return Tokenizer.from_dir(directory)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Tokenizer) -> tuple[Path, Path]:
    """Two checkpoints of one architecture and tokenizer with different weights (serve one, reload the other)."""
    root = tmp_path_factory.mktemp("models")
    return _model_dir(root, tiny_tokenizer, seed=0), _model_dir(root, tiny_tokenizer, seed=1)


@pytest.fixture
def start_server(tiny_dirs: tuple[Path, Path], tmp_path: Path) -> Iterator[Callable[..., InferenceServer]]:
    """start_server(table=True, max_num_seqs=32, step_delay_s=0, **ServeConfig fields) -> a started server on a free
    port, serving tiny_dirs[0] (stopped after the test). `step_delay_s` slows every forward (a forward pre-hook), so
    that a test can act while requests are still running."""
    started: list[InferenceServer] = []

    def start(table: bool = True, max_num_seqs: int = 32, step_delay_s: float = 0.0, **config: Any) -> InferenceServer:
        model, tokenizer = load_pretrained(tiny_dirs[0], dtype=torch.float32)
        if step_delay_s:
            model.register_forward_pre_hook(lambda *_: time.sleep(step_delay_s))
        engine = Engine(model, EngineConfig(kv_cache_bytes=8 * 2**20, block_size=16, max_num_seqs=max_num_seqs),
                        tokenizer=tokenizer)
        server = InferenceServer(engine, ServeConfig(port=0, **config),
                                 table_path=tmp_path / "infer.sqlite" if table else None, model_source=tiny_dirs[0])
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop(drain_timeout_s=5.0)
