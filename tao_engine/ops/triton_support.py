"""What every `triton` backend shares: the availability probe, the per-call device check and lazy kernel loading.

Nothing here imports triton at module import; `triton_probe` imports it on first use of a triton backend and
`kernel_module` imports a kernel module only when a backend function runs (DESIGN.md section 1).

Triton kernels run on CUDA tensors, or on CPU tensors when `TRITON_INTERPRET` is set (triton's interpreter, used
by the tests on machines without a GPU). The variable is read by triton when a kernel module is imported, so it has
to be set before the first triton call of the process.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

import torch

# The spellings triton itself accepts as true for boolean variables.
_TRUE_WORDS = ("1", "true", "on", "yes", "y")


def interpret_mode() -> bool:
    """Whether `TRITON_INTERPRET` asks for triton's CPU interpreter (read on every call: it is a dict lookup)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE_WORDS


def triton_probe() -> tuple[bool, str]:
    """Probe for `triton` backends: triton imports, and there is a GPU or the interpreter is on."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (`pip install triton`; wheels exist for Linux x86_64 and aarch64)"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # a broken install raises anything from ImportError to RuntimeError
        return False, f"triton is installed but fails to import: {exc}"
    if torch.cuda.is_available():
        return True, "triton with a CUDA device"
    if interpret_mode():
        return True, "triton interpreter on CPU (TRITON_INTERPRET=1)"
    return False, "no CUDA device is visible; set TRITON_INTERPRET=1 to run the Triton kernels on CPU (slow)"


def device_supported(*tensors: torch.Tensor) -> tuple[bool, str]:
    """All tensors on one device the kernels can run on: CUDA, or CPU under the interpreter."""
    device = tensors[0].device
    for t in tensors[1:]:
        if t.device != device:
            return False, f"tensors are on different devices ({device} and {t.device})"
    if device.type == "cuda":
        return True, ""
    if device.type == "cpu":
        if interpret_mode():
            return True, ""
        return False, "CPU tensors need TRITON_INTERPRET=1 (triton's interpreter); use a CUDA device otherwise"
    return False, f"triton kernels run on CUDA (or CPU with TRITON_INTERPRET=1), not on {device.type}"


def dtype_supported(name: str, t: torch.Tensor, allowed: tuple[torch.dtype, ...]) -> tuple[bool, str]:
    if t.dtype in allowed:
        return True, ""
    return False, f"{name} has dtype {t.dtype}; the triton kernel takes {', '.join(str(d) for d in allowed)}"


def kernel_module(name: str) -> ModuleType:
    """`tao_engine.kernels.<name>`, imported on first use. The top-level `kernels/` folder becomes that package when
    tao_engine is installed (wheel or `pip install -e .`); a bare source checkout on PYTHONPATH does not have it."""
    try:
        return importlib.import_module(f"tao_engine.kernels.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("tao_engine.kernels", f"tao_engine.kernels.{name}"):
            raise
        raise ModuleNotFoundError(
            f"{exc.name} is not installed: the Triton kernels ship as tao_engine.kernels only in an installed "
            "tao_engine; run `pip install --no-build-isolation -e .`",
            name=exc.name,
        ) from exc
