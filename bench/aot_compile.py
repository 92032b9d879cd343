"""Compile a captured Triton launch (bench/aot_standin.py) ahead of time for a GPU target and read its resource use.

NVIDIA: triton.compile goes through ttir, ttgir, llir, ptx and cubin with the ptxas that ships in the Triton wheel;
REG, STACK, SHARED (static) and LOCAL come from the wheel's `cuobjdump --dump-resource-usage` on the cubin, the
spill stores and loads from ptxas' own `-v` report (TRITON_DUMP_PTXAS_LOG), and the dynamic shared memory a launch
asks for from Triton's metadata. AMD: the same compile ends in amdgcn, whose metadata gives VGPRs, SGPRs, spill
counts, scratch (private segment) and LDS bytes.

A kernel fails when it spills (any spill store or load, any LOCAL memory, any AMD spill or scratch) or when its
shared memory is over what one block may use on the target.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import triton
from aot_standin import Launch
from triton import knobs
from triton.backends.compiler import GPUTarget


@dataclass(frozen=True)
class Target:
    name: str  # the report's file name: bench/results/aot-<name>.md
    gpu: str  # the GPU it stands for
    backend: str
    arch: int | str
    warp_size: int
    required: bool  # a failure here fails the check; the others are reported
    shared_limit: int  # bytes of shared memory (LDS) one block may use
    compute_units: int  # SMs / CUs of that GPU: the launchers' split-K rule sizes work to them

    def triton(self) -> GPUTarget:
        return GPUTarget(self.backend, self.arch, self.warp_size)


# Shared memory one block may use: on sm_90 / sm_100 the opt-in maximum of dynamic shared memory per block, 227 KiB
# (232448 bytes; the SM has 228 KiB, 1 KiB is reserved per block); on gfx942 (MI300) 64 KiB of LDS per workgroup.
TARGETS: dict[str, Target] = {
    "sm90": Target("sm90", "H100 SXM", "cuda", 90, 32, True, 232448, 132),
    "sm100": Target("sm100", "B200", "cuda", 100, 32, False, 232448, 148),
    "gfx942": Target("gfx942", "MI300X", "hip", "gfx942", 64, False, 65536, 304),
}


@dataclass(frozen=True)
class Resources:
    regs: int  # registers per thread (AMD: VGPRs, AGPRs included)
    spills: int  # NVIDIA: bytes of spill stores + loads; AMD: VGPR + SGPR spill count
    stack: int  # NVIDIA: stack frame bytes per thread; AMD: scratch (private segment) bytes per lane
    shared: int  # bytes per block: dynamic (Triton's request) + static (NVIDIA: cuobjdump's SHARED); AMD: LDS
    local: int  # NVIDIA: LOCAL bytes per thread; AMD: 0 (scratch is in `stack`)
    note: str  # the raw numbers the columns were read from

    def problems(self, target: Target) -> list[str]:
        found = []
        if self.spills or self.local or (target.backend == "hip" and self.stack):
            found.append("spills")
        if self.shared > target.shared_limit:
            found.append(f"shared {self.shared} > {target.shared_limit}")
        return found


def _json_to_options(options: dict[str, Any]) -> dict[str, Any]:
    # JSON turned the options' tuples into lists; Triton's option dataclasses hash them, so back to tuples.
    return {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
            for k, v in options.items()}


def _number(pattern: str, text: str) -> int:
    found = re.search(pattern, text, re.MULTILINE)
    if found is None:
        raise ValueError(f"{pattern!r} not found in:\n{text[:2000]}")
    return int(found.group(1))


def _cuobjdump_usage(cubin: bytes) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        out = subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-resource-usage", str(path)], capture_output=True,
                             text=True, timeout=120, check=True).stdout
    return parse_cuobjdump(out)[0]


def parse_cuobjdump(text: str) -> list[dict[str, Any]]:
    """`cuobjdump --dump-resource-usage` -> one dict per function: name, REG, STACK, SHARED, LOCAL."""
    rows = []
    for name, body in re.findall(r"Function ([^:\s]+):\s*\n\s*(REG:.*)", text):
        fields = dict(re.findall(r"(\w+):(\d+)", body))
        rows.append({"name": name, **{k: int(fields[k]) for k in ("REG", "STACK", "SHARED", "LOCAL")}})
    if not rows:
        raise ValueError(f"no function in cuobjdump's output:\n{text[:2000]}")
    return rows


def parse_ptxas_report(log: str) -> dict[str, tuple[int, int, int]]:
    """ptxas -v's report -> {function: (stack frame, spill stores, spill loads)}, in bytes."""
    found = re.findall(r"Function properties for (\S+)\s*\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
                       r"(\d+) bytes spill loads", log)
    if not found:
        raise ValueError(f"no 'bytes spill stores' line in the ptxas log:\n{log[:2000]}")
    return {name: (int(stack), int(stores), int(loads)) for name, stack, stores, loads in found}


def _nvidia(kernel: Any, ptxas_log: str) -> Resources:
    usage = _cuobjdump_usage(kernel.asm["cubin"])
    report = parse_ptxas_report(ptxas_log).values()  # one entry per function (a Triton cubin has one)
    stack_frame, stores, loads = (sum(row[i] for row in report) for i in range(3))
    dynamic = int(kernel.metadata.shared)
    note = (f"cuobjdump REG {usage['REG']} STACK {usage['STACK']} SHARED {usage['SHARED']} LOCAL {usage['LOCAL']}; "
            f"ptxas spill stores {stores} loads {loads}; dynamic shared {dynamic}")
    return Resources(regs=usage["REG"], spills=stores + loads, stack=max(usage["STACK"], stack_frame),
                     shared=dynamic + usage["SHARED"], local=usage["LOCAL"], note=note)


def _amd(kernel: Any) -> Resources:
    asm = kernel.asm["amdgcn"]
    vgpr = _number(r"^; TotalNumVgprs: (\d+)", asm)  # architectural VGPRs and AGPRs (one register file on gfx942)
    sgpr = _number(r"^[\s-]*\.sgpr_count:\s+(\d+)", asm)
    vgpr_spills = _number(r"^[\s-]*\.vgpr_spill_count:\s+(\d+)", asm)
    sgpr_spills = _number(r"^[\s-]*\.sgpr_spill_count:\s+(\d+)", asm)
    scratch = _number(r"^; ScratchSize: (\d+)", asm)
    lds = max(int(kernel.metadata.shared), _number(r"^[\s-]*\.group_segment_fixed_size:\s+(\d+)", asm))
    note = f"VGPR+AGPR {vgpr} SGPR {sgpr}; spills VGPR {vgpr_spills} SGPR {sgpr_spills}; scratch {scratch}"
    return Resources(regs=vgpr, spills=vgpr_spills + sgpr_spills, stack=scratch, shared=lds, local=0, note=note)


def compile_launch(launch: Launch, target: Target) -> dict[str, Any]:
    """Compile `launch` for `target` (in this process) -> Resources as a dict (it crosses process boundaries)."""
    module = importlib.import_module(launch.module)
    kernel_fn = getattr(module, launch.kernel)
    source = triton.compiler.ASTSource(kernel_fn, launch.signature, launch.constants, launch.attrs)
    log = io.StringIO()
    # A private, empty cache directory: a cached kernel would skip ptxas and with it the spill report.
    with tempfile.TemporaryDirectory() as cache, knobs.cache.scope(), knobs.nvidia.scope(), \
            contextlib.redirect_stdout(log):
        knobs.cache.dir = cache
        knobs.nvidia.dump_ptxas_log = True  # ptxas -v's report is printed; captured in `log`
        kernel = triton.compile(source, target=target.triton(), options=_json_to_options(launch.options))
    resources = _amd(kernel) if target.backend == "hip" else _nvidia(kernel, log.getvalue())
    return asdict(resources)
