"""Registers, stack, shared and local memory of every CUDA kernel in csrc/cuda/, compiled ahead of time.

Each `csrc/cuda/*.cu` is compiled to a cubin with `nvcc -cubin -arch=sm_<NN> -Xptxas -v` and the flags of the real
build: torch's CUDAExtension defaults (COMMON_NVCC_FLAGS, -std=c++20, the extension defines, torch's include paths)
plus setup.py's own NVCC_FLAGS and CUDA_MACROS (read from setup.py, so they are stated once). ptxas' report gives the
spill stores and loads per kernel; the wheel's cuobjdump gives REG, STACK, SHARED and LOCAL. These kernels use static
shared memory only (their launches pass 0 dynamic bytes), so the cubin's SHARED is all they ask for; the static limit
is 48 KiB per block.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import torch
from aot_compile import parse_cuobjdump, parse_ptxas_report
from triton import knobs

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
STATIC_SHARED_LIMIT = 48 * 1024  # bytes of static __shared__ per block on every CUDA GPU


def _setup_constant(name: str) -> Any:
    """A module-level literal of setup.py (which cannot be imported: importing it runs setup())."""
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(f"setup.py has no module-level {name}")


def find_nvcc() -> str | None:
    return shutil.which("nvcc")


def nvcc_flags() -> list[str]:
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

    includes = [*include_paths(), sysconfig.get_paths()["include"]]
    flags = [*COMMON_NVCC_FLAGS, "-std=c++20", "-DTORCH_EXTENSION_NAME=_C", "-DTORCH_API_INCLUDE_EXTENSION_H",
             f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}", *_setup_constant("NVCC_FLAGS")]
    flags += [f"-D{name}={value}" for name, value in _setup_constant("CUDA_MACROS")]
    flags += [f"-I{path}" for path in includes]
    # A CPU build of torch ships the c10/cuda headers without this CMake-generated one (export macros only).
    if not any((Path(path) / "c10/cuda/impl/cuda_cmake_macros.h").is_file() for path in includes):
        flags.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")
    return flags


def _demangle(names: list[str]) -> list[str]:
    tool = shutil.which("c++filt")
    if tool is None:
        return names
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, timeout=60).stdout
    lines = out.splitlines()
    return lines if len(lines) == len(names) else names


def source_rows(source: Path, arch: int, nvcc: str, flags: list[str]) -> list[dict[str, object]]:
    """One row per kernel of one .cu file, for sm_<arch>."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / f"{source.stem}.cubin"
        command = [nvcc, "-cubin", f"-arch=sm_{arch}", "-Xptxas", "-v", str(source), "-o", str(cubin), *flags]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return [{"file": source.name, "kernel": "(compile failed)", "REG": None, "STACK": None, "SHARED": None,
                     "LOCAL": None, "spills": None, "result": "FAIL", "note": done.stderr.strip()[-300:]}]
        spills = parse_ptxas_report(done.stdout + done.stderr)
        usage = parse_cuobjdump(subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-resource-usage", str(cubin)],
                                               capture_output=True, text=True, timeout=120, check=True).stdout)
    rows = []
    for entry, name in zip(usage, _demangle([u["name"] for u in usage]), strict=True):
        stack, stores, loads = spills.get(entry["name"], (0, -1, -1))
        problems = []
        if stores or loads or entry["LOCAL"]:
            problems.append("spills" if stores >= 0 else "no ptxas report")
        if entry["SHARED"] > STATIC_SHARED_LIMIT:
            problems.append(f"shared {entry['SHARED']} > {STATIC_SHARED_LIMIT}")
        rows.append({"file": source.name, "kernel": name.replace("tao_engine::cuda::", "").replace(
            "(anonymous namespace)::", ""), "REG": entry["REG"], "STACK": max(entry["STACK"], stack),
            "SHARED": entry["SHARED"], "LOCAL": entry["LOCAL"], "spills": stores + loads,
            "result": "FAIL: " + ", ".join(problems) if problems else "ok", "note": ""})
    return rows


def cuda_rows(arch: int, sources: list[Path] | None = None) -> list[dict[str, object]]:
    """Every kernel of csrc/cuda/*.cu (or of `sources`) for sm_<arch>; empty when nvcc is not installed."""
    nvcc = find_nvcc()
    if nvcc is None:
        return []
    flags = nvcc_flags()
    return [row for source in (sources or sorted(CUDA_DIR.glob("*.cu"))) for row in source_rows(source, arch, nvcc,
                                                                                               flags)]
