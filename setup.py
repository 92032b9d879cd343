"""Build tao_engine and its compiled extension `tao_engine._C` (DESIGN.md section 3).

Install after torch, so the extension is built against the torch you run:
    pip install --no-build-isolation -e .

Environment:
    TAO_BUILD_EXT=0   skip the extension; the package installs and every op runs its torch reference.
    TAO_BUILD_CUDA=0  build CPU kernels only, even when a CUDA toolkit and a CUDA build of torch are present.
    MAX_JOBS=N        parallel compile jobs for ninja (defaults to 2 here: CI machines have 2 cores).

Package metadata lives in pyproject.toml; the package list, with `kernels/` installed as `tao_engine.kernels`, is here.
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import find_packages, setup

# `kernels/` (Triton code) installs as `tao_engine.kernels`, never as a top-level `kernels` package. The mapping is
# here rather than in pyproject.toml because `packages.find` cannot rename a directory into another package.
PACKAGE_DIR = {"tao_engine.kernels": "kernels"}
PACKAGES = find_packages(include=["tao_engine", "tao_engine.*"]) + [
    "tao_engine.kernels" + (f".{sub}" if sub else "") for sub in ("", *find_packages("kernels"))
]


# nvcc's own flags and the macros of the CUDA build, on top of torch's CUDAExtension defaults (bench/aot_cuda_sources.py
# reads both lists to compile csrc/cuda/*.cu the same way for its register and spill table).
NVCC_FLAGS = ["-O3", "-lineinfo"]
CUDA_MACROS = [("TAO_WITH_CUDA", "1")]


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value in ("0", "1"):
        return value == "1"
    raise SystemExit(f"setup.py: {name} must be 0 or 1, got {value!r}")


def _sources(*patterns: str) -> list[str]:
    # Relative paths: setuptools rejects absolute source paths in editable and wheel builds.
    return sorted(path for pattern in patterns for path in glob.glob(pattern))


def _extension_kwargs() -> dict:
    if not _env_flag("TAO_BUILD_EXT", True):
        print("setup.py: TAO_BUILD_EXT=0, skipping tao_engine._C (ops run their torch references)", file=sys.stderr)
        return {}

    import torch
    from torch.utils import cpp_extension

    os.environ.setdefault("MAX_JOBS", "2")

    # No -march: the wheel must run on any machine of the architecture, and CI's CPU differs from users'. Everything
    # is compiled for the baseline ISA except the kernel copies in `csrc/cpu/*_avx2.cpp`, which raise their own ISA
    # with `#pragma GCC target` and are called only when ATen reports AVX2 at run time (ATen's CPU_CAPABILITY scheme,
    # done per file because one setuptools Extension cannot give files different flags). At baseline flags
    # at::vec::Vectorized is a generic array type (NEON on aarch64) and ran ~10x slower than its AVX2 form here.
    cxx_flags = ["-O3", "-Wno-unknown-pragmas"]  # torch's vec headers carry `#pragma unroll`, unknown to GCC
    link_flags: list[str] = []
    if torch.backends.openmp.is_available():
        # at::parallel_for is an inline template: with ATen's OpenMP backend it only runs in parallel when this
        # code is itself compiled with OpenMP. libgomp is the one torch already loaded (same soname).
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")

    # Objects built for a wider ISA (`*_avx2.cpp`, see csrc/cpu/token_logprobs_kernels.h) link last: when several
    # objects emit the same inline function, the linker keeps the first copy, and that must be baseline code.
    sources = sorted(_sources("csrc/*.cpp", "csrc/cpu/*.cpp"), key=lambda path: (path.endswith("_avx2.cpp"), path))
    cuda_requested = _env_flag("TAO_BUILD_CUDA", True)
    # cpp_extension.CUDA_HOME is None unless torch itself is a CUDA build and a toolkit (nvcc) is found.
    with_cuda = cuda_requested and torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if with_cuda:
        extension = cpp_extension.CUDAExtension(
            name="tao_engine._C",
            sources=sources + _sources("csrc/cuda/*.cpp", "csrc/cuda/*.cu"),
            define_macros=CUDA_MACROS,
            extra_compile_args={"cxx": cxx_flags, "nvcc": NVCC_FLAGS},
            extra_link_args=link_flags,
        )
    else:
        if cuda_requested and torch.version.cuda is not None:
            print("setup.py: no CUDA toolkit found (CUDA_HOME), building CPU kernels only", file=sys.stderr)
        extension = cpp_extension.CppExtension(
            name="tao_engine._C",
            sources=sources,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    return {
        "ext_modules": [extension],
        "cmdclass": {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    }


setup(packages=PACKAGES, package_dir=PACKAGE_DIR, **_extension_kwargs())
