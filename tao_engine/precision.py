"""`dtype="auto"`: the dtype this machine computes fastest without losing training quality, and why.

- CPU with native bf16 matrix units (AMX) or bf16 dot-product instructions (AVX512-BF16): bfloat16. torch's bf16
  matmul runs 2.5-4x its fp32 there (measured 917 vs 258 GFLOP/s at 1024^3 on a Sapphire Rapids core pair).
- Any other CPU (AVX2, AVX-512 without BF16): float32. bf16 would be converted to fp32 in software around every
  matmul and run slower than fp32 itself.
- CUDA GPU that supports bf16 (compute capability >= 8.0): bfloat16; an older GPU: float32.

Weights and the KV cache take the chosen dtype; the trainer keeps fp32 master weights for bf16 parameters
(tao_engine/rl/master_weights.py), so small updates are not lost to bf16 rounding. The CPU's features are passed in
(`CpuFeatures`) rather than read inside, so tests cover both choices on any machine; `CpuFeatures.detect()` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

AUTO = "auto"


@dataclass(frozen=True)
class CpuFeatures:
    model: str = "unknown CPU"
    avx2: bool = False
    avx512: bool = False
    avx512_bf16: bool = False
    amx_bf16: bool = False

    @property
    def native_bf16(self) -> bool:
        return self.amx_bf16 or self.avx512_bf16

    @classmethod
    def detect(cls) -> CpuFeatures:
        """This machine's CPU: torch's own probes (the code paths its kernels take), /proc/cpuinfo for the model."""
        model = "unknown CPU"
        flags: set[str] = set()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
        except OSError:
            pass
        probe = torch.cpu
        # AMX tiles usable (the CPU has them and the OS granted them), with the bf16 instructions among them.
        amx_tile = _probe(probe, "_is_amx_tile_supported", "amx_tile" in flags)
        return cls(
            model=model,
            avx2=_probe(probe, "_is_avx2_supported", "avx2" in flags),
            avx512=_probe(probe, "_is_avx512_supported", "avx512f" in flags),
            avx512_bf16=_probe(probe, "_is_avx512_bf16_supported", "avx512_bf16" in flags),
            amx_bf16=amx_tile and ("amx_bf16" in flags if flags else True),
        )


def _probe(module: object, name: str, fallback: bool) -> bool:
    fn = getattr(module, name, None)
    try:
        return bool(fn()) if fn is not None else fallback
    except RuntimeError:
        return fallback


@dataclass(frozen=True)
class DtypeChoice:
    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def choose_dtype(device: torch.device | str = "cpu", cpu: CpuFeatures | None = None,
                 cuda_bf16: bool | None = None) -> DtypeChoice:
    """What `dtype="auto"` means on `device`; `cpu` / `cuda_bf16` override the detected features (tests)."""
    kind = torch.device(device).type
    if kind == "cuda":
        ok = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        if ok:
            return DtypeChoice(torch.bfloat16, "the GPU supports bf16 (compute capability >= 8.0)")
        return DtypeChoice(torch.float32, "the GPU has no bf16 support (compute capability < 8.0)")
    if kind != "cpu":
        return DtypeChoice(torch.float32, f"no bf16 policy for {kind} devices")
    cpu = cpu or CpuFeatures.detect()
    if cpu.amx_bf16:
        return DtypeChoice(torch.bfloat16, f"{cpu.model} has AMX bf16 tile units: bf16 matmuls run 2.5-4x fp32")
    if cpu.avx512_bf16:
        return DtypeChoice(torch.bfloat16, f"{cpu.model} has AVX512-BF16 dot products: bf16 matmuls beat fp32")
    isa = "AVX-512 without BF16" if cpu.avx512 else ("AVX2" if cpu.avx2 else "no AVX2")
    return DtypeChoice(torch.float32, f"{cpu.model} has {isa}: no native bf16, which would be converted in "
                       "software around every matmul and run slower than fp32")


def resolve_dtype_name(dtype: str | None, device: torch.device | str = "cpu") -> str | None:
    """A configured dtype name with "auto" replaced by this machine's choice; other values pass through."""
    return choose_dtype(device).name if dtype == AUTO else dtype
