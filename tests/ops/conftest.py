"""Op tests: one file per op, each test parametrized over the backends it covers (`backends(...)`), each backend
carrying its marker (`ext` for the compiled extension, `triton`, `gpu`) and skipped here, with the reason, when this
machine cannot run it; `device` is where the chosen backend's inputs live."""

from __future__ import annotations

import pytest
import torch

MARKS = {
    "torch": (),
    "cpp": (pytest.mark.ext,),
    "triton": (pytest.mark.triton,),
    "cuda": (pytest.mark.gpu, pytest.mark.ext),
}


def backends(*names: str) -> list:
    """`backend` parameters with their markers, for `@pytest.mark.parametrize("backend", backends(...))`."""
    return [pytest.param(name, marks=MARKS[name], id=name) for name in names]


@pytest.fixture(autouse=True)
def _needs_extension(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("ext") is not None:
        from tao_engine.ops.extension import extension_status

        loaded, why = extension_status()
        if not loaded:
            pytest.skip(f"tao_engine._C is not built: {why}")


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device the test's `backend` runs on: the Triton kernels' device (which also checks that triton runs),
    CUDA for `cuda`, else the CPU."""
    backend = request.getfixturevalue("backend")
    if backend == "triton":
        return request.getfixturevalue("triton_device")
    if backend == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


def cases(backend: str, *params: tuple) -> list:
    """Parameter sets that belong to one backend (sizes its kernel runs in test time: triton's interpreter runs a
    row in tens of milliseconds), each `(backend, *case)` with the backend's markers."""
    return [pytest.param(backend, *case, marks=MARKS[backend]) for case in params]
