// Kernels of silu_and_mul (out = silu(gate) * up, the Llama MLP's gated activation) and its backward, compiled once
// per CPU capability as ATen does: the same source (activation_kernels_impl.h) is built for the baseline ISA
// (namespace DEFAULT) and, on x86-64 with GCC, for AVX2 + FMA + F16C (namespace AVX2); csrc/cpu/activation.cpp picks
// one at run time. All tensors are contiguous and of one dtype; the math runs in fp32 and rounds once per output.
#pragma once

#include <cstdint>

#include "cpu_isa.h"  // TAO_CPU_AVX2_KERNELS, use_avx2_kernels()
#include "../float_kind.h"

namespace tao_engine::cpu {

struct SiluAndMul {
  const void* gate;  // [numel]
  const void* up;  // [numel]
  const void* grad_out;  // backward only: [numel]
  void* out;  // forward: silu(gate) * up; backward: grad_gate = grad_out * up * silu'(gate)
  void* grad_up;  // backward only: grad_out * silu(gate)
  FloatKind kind;
};

// Elements [begin, end).
using SiluAndMulKernel = void(const SiluAndMul& p, int64_t begin, int64_t end);

TAO_CPU_KERNELS(
    SiluAndMulKernel silu_and_mul_range;
    SiluAndMulKernel silu_and_mul_backward_range;
)

}  // namespace tao_engine::cpu
