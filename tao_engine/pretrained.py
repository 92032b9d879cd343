"""One call to get a model and its tokenizer from an HF-layout directory or a GGUF file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tao_engine.models.loading import load_model
from tao_engine.tokenizer import Tokenizer


def load_pretrained(
    path: str | Path, dtype: torch.dtype | str | None = None, device: torch.device | str = "cpu"
) -> tuple[nn.Module, Tokenizer]:
    """(model, tokenizer) from an HF-layout directory. A `.gguf` file is imported first into a sibling directory
    named after it (reused on later calls)."""
    path = Path(path)
    if path.suffix == ".gguf":
        from tao_engine.gguf_import import import_gguf

        target = path.with_suffix("")
        if not (target / "config.json").is_file():
            import_gguf(path, target)
        path = target
    return load_model(path, dtype=dtype, device=device), Tokenizer.from_dir(path)
