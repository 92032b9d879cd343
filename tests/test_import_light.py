"""`import tao_engine` must not import triton, load the compiled extension or initialize CUDA (DESIGN.md 1)."""

from __future__ import annotations

import subprocess
import sys


def test_import_is_light():
    code = (
        "import sys, tao_engine, tao_engine.ops, tao_engine.models, tao_engine.layers;"
        "import torch;"
        "bad = [m for m in ('triton', 'tao_engine._C', 'tao_engine.kernels') if m in sys.modules];"
        "assert not bad, bad;"
        "assert not torch.cuda.is_initialized();"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
