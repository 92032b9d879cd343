"""Triton is imported by the first explicit `triton` call and by nothing before it (DESIGN.md section 1)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.triton

_CODE = """
import sys, torch
import tao_engine, tao_engine.ops as ops
x, w = torch.randn(3, 8), torch.randn(8)
logits, targets = torch.randn(3, 11), torch.randint(0, 11, (3,))
ops.rms_norm(x, w, 1e-6)
ops.token_logprobs(logits, targets)
assert "triton" not in sys.modules, "automatic resolution on CPU imported triton"
ops.rms_norm(x, w, 1e-6, backend="triton")
ops.token_logprobs(logits, targets, backend="triton")
loaded = [m for m in ("triton", "tao_engine.kernels.rms_norm", "tao_engine.kernels.token_logprobs") if m in sys.modules]
print(",".join(loaded))
"""


def test_only_an_explicit_triton_call_imports_triton(triton_device):
    if triton_device.type != "cpu":
        pytest.skip("checks the CPU path: on a GPU machine automatic resolution may pick triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", _CODE], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "triton,tao_engine.kernels.rms_norm,tao_engine.kernels.token_logprobs"
