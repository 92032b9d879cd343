"""Lazy, cached loading of the compiled extension `tao_engine._C`.

`import tao_engine` must never load `_C` (DESIGN.md section 1): backends call `load_extension()` from their probes,
which run on first use of an op.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType


@functools.cache
def _load() -> tuple[ModuleType | None, str]:
    try:
        module = importlib.import_module("tao_engine._C")
    except ImportError as exc:
        return None, (
            f"tao_engine._C is not built or failed to load ({exc}); reinstall with "
            "`pip install --no-build-isolation -e .` (TAO_BUILD_EXT=0 skips the build on purpose)"
        )
    # Fake kernels and autograd formulas of the compiled ops, kept by each op beside its reference; they need the
    # ops that loading `_C` just registered. Importing this module imported `tao_engine.ops`, so every op is defined.
    from tao_engine.ops.registry import all_ops

    try:
        for op in all_ops().values():
            for registration in op.compiled:
                registration.apply()
    except RuntimeError as exc:  # a `_C` built from older sources lacks ops that the Python side names
        return None, (
            f"tao_engine._C is out of date with its Python registrations ({exc}); rebuild with "
            "`pip install --no-build-isolation -e .`"
        )
    return module, "loaded"


def load_extension() -> ModuleType | None:
    """The compiled extension module, or None when it is not built. Loading registers its torch ops."""
    return _load()[0]


def extension_status() -> tuple[bool, str]:
    """(loaded, reason) for the compiled extension, without raising."""
    module, why = _load()
    return module is not None, why


def cpu_backend_probe() -> tuple[bool, str]:
    """Probe for `cpp` backends: the extension is loaded (its CPU kernels are always compiled in)."""
    return extension_status()


def cuda_backend_probe() -> tuple[bool, str]:
    """Probe for `cuda` backends: the extension was built with CUDA sources and a GPU is visible."""
    module, why = _load()
    if module is None:
        return False, why
    import torch

    if not getattr(module, "WITH_CUDA", False):
        return False, "tao_engine._C was built without CUDA kernels (no CUDA toolkit or CPU build of torch)"
    if not torch.cuda.is_available():
        return False, "no CUDA device is visible"
    return True, "built with CUDA"
