"""Every ISA copy of the CPU kernels (csrc/cpu/*_kernels_{default,avx2,avx512}.cpp) on one machine.

The test files run the widest copy the CPU has (AVX-512 where ATen runs AVX512, else AVX2). ATEN_CPU_CAPABILITY makes
the host code pick another, so this runs the cpp cases of the kernels' test files again in a child process that
asserts it really runs at that capability: the baseline copies of the layer ops (the other families check their
baseline copies in their own files), and on an AVX-512 CPU every family's AVX2 copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tao_engine.ops.extension import extension_status
from tests.helpers import run_at_isa

pytestmark = pytest.mark.ext

LAYER_OPS = ["test_rms_norm.py", "test_add_rms_norm.py", "test_silu_and_mul.py", "test_apply_rotary.py"]
OTHER_FAMILIES = ["test_sampling.py", "test_token_logprobs.py", "test_linear_logprobs.py", "test_paged_attention.py"]


def _run_cpp_cases(capability: str, files: list[str]) -> None:
    loaded, why = extension_status()
    if not loaded:
        pytest.skip(f"tao_engine._C is not built: {why}")
    paths = [str(Path(__file__).parent / name) for name in files]
    code = f"""
        import sys
        import pytest
        sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", "-k", "cpp and not opcheck", *{paths!r}]))
        """
    assert " passed" in run_at_isa(capability, code, timeout=900, root_on_path=False).stdout


def test_baseline_isa_kernels_pass_the_cpp_cases():
    _run_cpp_cases("default", LAYER_OPS)


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512",
                    reason="the test files themselves run the AVX2 copies on a CPU without AVX-512")
def test_avx2_kernels_pass_the_cpp_cases_on_an_avx512_cpu():
    _run_cpp_cases("avx2", LAYER_OPS + OTHER_FAMILIES)
