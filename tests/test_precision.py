"""dtype="auto" (tao_engine.precision): bf16 where the device computes it natively, float32 elsewhere, with the
reason; both CPU choices covered by passing the CPU's features in, whatever this machine is."""

from __future__ import annotations

import torch

from tao_engine.doctor import report
from tao_engine.engine import Engine, EngineConfig
from tao_engine.precision import CpuFeatures, choose_dtype, resolve_dtype_name

AMX = CpuFeatures(model="Xeon (Sapphire Rapids)", avx2=True, avx512=True, avx512_bf16=True, amx_bf16=True)
AVX512_BF16 = CpuFeatures(model="EPYC (Genoa)", avx2=True, avx512=True, avx512_bf16=True)
AVX512 = CpuFeatures(model="Xeon (Skylake)", avx2=True, avx512=True)
AVX2 = CpuFeatures(model="EPYC (Milan)", avx2=True)


def test_cpus_with_native_bf16_choose_bf16():
    for cpu, unit in ((AMX, "AMX"), (AVX512_BF16, "AVX512-BF16")):
        choice = choose_dtype("cpu", cpu=cpu)
        assert choice.dtype == torch.bfloat16 and choice.name == "bfloat16"
        assert unit in choice.reason and cpu.model in choice.reason


def test_cpus_without_native_bf16_choose_fp32():
    for cpu, isa in ((AVX512, "AVX-512 without BF16"), (AVX2, "AVX2"), (CpuFeatures(), "no AVX2")):
        choice = choose_dtype("cpu", cpu=cpu)
        assert choice.dtype == torch.float32 and isa in choice.reason and "slower than fp32" in choice.reason


def test_gpus_choose_by_bf16_support():
    assert choose_dtype("cuda", cuda_bf16=True).dtype == torch.bfloat16
    assert choose_dtype("cuda", cuda_bf16=False).dtype == torch.float32


def test_this_machine_and_the_places_auto_is_accepted():
    detected = CpuFeatures.detect()
    choice = choose_dtype("cpu")
    assert choice == choose_dtype("cpu", cpu=detected)
    assert resolve_dtype_name("auto") == choice.name and resolve_dtype_name("float16") == "float16"
    assert f"dtype auto cpu: {choice.name} ({choice.reason})" in report()
    from tests import helpers

    engine = Engine(helpers.tiny_model(0), EngineConfig(dtype="auto", kv_cache_bytes=2**20))  # a module: its dtype
    assert engine.dtype == torch.float32
