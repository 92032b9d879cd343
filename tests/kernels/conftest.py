"""Triton kernel tests: on a CUDA device when there is one, else on CPU tensors under triton's interpreter.

Triton reads TRITON_INTERPRET when a kernel module is imported (at `@triton.jit`); tests/conftest.py sets it
before any test module is collected. The `triton_device` fixture checks that the kernels really are
interpreted before a CPU test uses them.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def triton_device() -> torch.device:
    """The device the Triton kernels run on here; skips when triton cannot run at all."""
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
