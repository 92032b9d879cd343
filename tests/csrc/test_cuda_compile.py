"""Compile checks of the CUDA sources (DESIGN.md section 3): without a GPU they cannot run, but they must build.

Each `csrc/cuda/*.cu` (device code and launchers) is compiled with `nvcc -arch=sm_90 -c`, and each `csrc/cuda/*.cpp`
(host code: checks, streams, TORCH_LIBRARY_IMPL glue) through nvcc with the CUDA toolkit's headers, both against
this torch's headers. Skips only when nvcc is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"


def _find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return None


NVCC = _find_nvcc()
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, CUDA_HOME, /usr/local/cuda)")


def _flags() -> list[str]:
    from torch.utils.cpp_extension import include_paths

    includes = [*include_paths(), sysconfig.get_paths()["include"]]
    flags = ["-std=c++20", "-O3", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    flags += [f"-I{path}" for path in includes]
    # A CPU build of torch ships the c10/cuda headers but not this CMake-generated one (it only sets export
    # macros); skip its include, as the ROCm build of those headers does.
    if not any((Path(path) / "c10/cuda/impl/cuda_cmake_macros.h").is_file() for path in includes):
        flags.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")
    return flags


def _compile(command: list[str], output: Path) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    assert "warning" not in done.stderr.lower(), done.stderr
    assert output.is_file() and output.stat().st_size > 0


@pytest.mark.parametrize("source", sorted(CUDA_DIR.glob("*.cu")), ids=lambda path: path.name)
def test_cuda_source_compiles_for_sm90(source: Path, tmp_path: Path):
    output = tmp_path / f"{source.stem}.o"
    _compile([NVCC, "-arch=sm_90", "-c", str(source), "-o", str(output), *_flags()], output)


@pytest.mark.parametrize("source", sorted(CUDA_DIR.glob("*.cpp")), ids=lambda path: path.name)
def test_cuda_host_source_compiles(source: Path, tmp_path: Path):
    output = tmp_path / f"{source.stem}.o"
    _compile([NVCC, "-c", str(source), "-o", str(output), "-Xcompiler", "-fPIC", *_flags()], output)
