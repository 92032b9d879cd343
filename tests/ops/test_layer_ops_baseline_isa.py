"""The baseline-ISA copies of the layer-op kernels (csrc/cpu/{rms_norm,activation,rotary}_kernels_default.cpp).

ATEN_CPU_CAPABILITY=default makes the host code pick the baseline copies, so this runs the cpp cases of the layer
ops' test files again in a child process that asserts it really runs at that capability; the files themselves run
the AVX2 copies wherever the CPU has AVX2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tao_engine.ops.extension import extension_status
from tests.helpers import run_at_baseline_isa

pytestmark = pytest.mark.ext

FILES = ["test_rms_norm.py", "test_add_rms_norm.py", "test_silu_and_mul.py", "test_apply_rotary.py"]


def test_baseline_isa_kernels_pass_the_cpp_cases():
    loaded, why = extension_status()
    if not loaded:
        pytest.skip(f"tao_engine._C is not built: {why}")
    paths = [str(Path(__file__).parent / name) for name in FILES]
    code = f"""
        import sys
        import pytest
        sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-k", "cpp and not opcheck", *{paths!r}]))
        """
    assert " passed" in run_at_baseline_isa(code, timeout=600, root_on_path=False).stdout
