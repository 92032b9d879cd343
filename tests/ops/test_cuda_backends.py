"""The `cuda` backends (csrc/cuda/*) against the fp64 torch reference, on a CUDA machine with a CUDA build of
tao_engine._C; skipped elsewhere (this machine has no GPU: tests/csrc/test_cuda_compile.py compile-checks them).

The cases are bench/gpu_check.py's (bench/gpu_check_cases.py), so the GPU check and the test suite assert the same
thing; opcheck covers the schema, fake kernels and autograd registration of each compiled op on CUDA.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from gpu_check_cases import CASES  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.ext]


def _cuda_ok() -> tuple[bool, str]:
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    from tao_engine.ops.extension import cuda_backend_probe

    return cuda_backend_probe()


@pytest.fixture(autouse=True)
def _needs_cuda_build():
    ok, why = _cuda_ok()
    if not ok:
        pytest.skip(why)


_CUDA_CASES = [
    pytest.param(case, dtype, id=f"{case.op}-{str(dtype).removeprefix('torch.')}")
    for case in CASES
    if case.op != "rms_norm"  # triton only
    for dtype in case.dtypes
]


@pytest.mark.parametrize(("case", "dtype"), _CUDA_CASES)
def test_cuda_backend_matches_reference(case, dtype):
    torch.manual_seed(0)
    error, tolerance, note = case.fn("cuda", dtype)
    assert error <= tolerance, f"{case.op} {dtype}: max error {error} > {tolerance} ({note})"


def test_opcheck_cuda_ops():
    ops = torch.ops.tao_engine
    dev = "cuda"
    logits = torch.randn(7, 129, device=dev)
    targets = torch.randint(0, 129, (7,), device=dev)
    torch.library.opcheck(ops.token_logprobs.default, (logits, targets, 0.8))
    k_cache = torch.randn(5, 4, 3, 8, device=dev)
    v_cache = torch.randn_like(k_cache)
    k = torch.randn(6, 3, 8, device=dev)
    slots = torch.tensor([0, 3, -1, 7, 19, 2], device=dev)
    torch.library.opcheck(ops.write_kv_cache.default, (k, k.clone(), k_cache, v_cache, slots))
    q = torch.randn(2, 6, 8, device=dev)
    tables = torch.tensor([[0, 1, 2], [3, 4, 0]], device=dev, dtype=torch.int32)
    lens = torch.tensor([9, 5], device=dev)
    torch.library.opcheck(ops.paged_decode_attention.default, (q, k_cache, v_cache, tables, lens, 0.35))
    rows = 5
    params = (
        torch.full((rows,), 0.7, device=dev),
        torch.full((rows,), 5, device=dev, dtype=torch.long),
        torch.full((rows,), 0.9, device=dev),
        torch.zeros(rows, device=dev),
        torch.arange(rows, device=dev),
        torch.zeros(rows, device=dev, dtype=torch.long),
    )
    torch.library.opcheck(ops.sample.default, (torch.randn(rows, 33, device=dev), *params))
    rewards = torch.randn(4, 6, device=dev)
    torch.library.opcheck(ops.group_advantages.default, (rewards, "mean_std", 1e-6))
    hidden = torch.randn(7, 16, device=dev, requires_grad=True)
    weight = torch.randn(33, 16, device=dev, requires_grad=True)
    torch.library.opcheck(ops.linear_logprobs.default, (hidden, weight, torch.randint(0, 33, (7,), device=dev), 1.0))
