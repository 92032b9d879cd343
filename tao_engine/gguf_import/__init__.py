"""Import llama.cpp GGUF files as Hugging Face model directories (config, safetensors, tokenizer).

    from tao_engine.gguf_import import import_gguf
    model_dir = import_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", "models/smollm2")
"""

from __future__ import annotations

from tao_engine.gguf_import.importer import import_gguf
from tao_engine.gguf_import.reader import GGUFImportError

__all__ = ["GGUFImportError", "import_gguf"]
