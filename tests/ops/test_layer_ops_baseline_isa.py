"""The baseline-ISA copies of the layer-op kernels (csrc/cpu/{rms_norm,activation,rotary}_kernels_default.cpp).

ATEN_CPU_CAPABILITY=default makes the host code pick the baseline copies, so this runs the cpp cases of the layer
ops' test files again in a child process that asserts it really runs at that capability; the files themselves run
the AVX2 copies wherever the CPU has AVX2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tao_engine.ops.extension import extension_status

pytestmark = pytest.mark.ext

ROOT = Path(__file__).resolve().parents[2]
FILES = ["test_rms_norm.py", "test_add_rms_norm.py", "test_silu_and_mul.py", "test_apply_rotary.py"]


def test_baseline_isa_kernels_pass_the_cpp_cases():
    loaded, why = extension_status()
    if not loaded:
        pytest.skip(f"tao_engine._C is not built: {why}")
    paths = [str(Path(__file__).parent / name) for name in FILES]
    code = textwrap.dedent(
        f"""
        import sys
        import pytest
        import torch
        assert torch.backends.cpu.get_cpu_capability() == "DEFAULT", torch.backends.cpu.get_cpu_capability()
        sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-k", "cpp and not opcheck", *{paths!r}]))
        """
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    # -P: the working directory (the repository root) stays off sys.path, as tests/conftest.py requires
    done = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=600, env=env,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
