"""tao_engine: Test-time Adaptive Optimization of LLMs from unlabeled prompts, in one process.

Importing this package never imports triton, never loads the compiled extension and never touches CUDA.
"""

from tao_engine.forward_batch import ForwardBatch

__version__ = "0.1.0"

__all__ = ["ForwardBatch", "__version__", "load_pretrained", "save_pretrained"]


def __getattr__(name: str):
    # Model loading pulls in safetensors, tokenizers and jinja2: import it on first use, not with the package.
    if name == "load_pretrained":
        from tao_engine.pretrained import load_pretrained

        return load_pretrained
    if name == "save_pretrained":
        from tao_engine.models.saving import save_pretrained

        return save_pretrained
    raise AttributeError(f"module 'tao_engine' has no attribute {name!r}")
