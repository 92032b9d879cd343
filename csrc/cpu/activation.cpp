// CPU host code of silu_and_mul (out = silu(gate) * up) and its backward: argument checks, the choice of the per-ISA
// kernels (activation_kernels.h) and the split of elements over threads with at::parallel_for. Schemas: csrc/ops.cpp;
// specification: tao_engine/ops/activation.py.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../float_kind_of.h"
#include "activation_kernels.h"

namespace tao_engine {
namespace {

// Elements one thread handles before another is worth waking: a decode step's [64, 1536] (~80 us on one thread, bf16)
// splits over two threads (~43 us); see rms_norm.cpp for what that did to a whole decode step.
constexpr int64_t kGrain = 1 << 15;

void check_pair(const char* op, const char* name, const at::Tensor& gate, const at::Tensor& other) {
  TORCH_CHECK_VALUE(gate.device().is_cpu() && other.device().is_cpu(), op, ": tensors must be on the CPU");
  TORCH_CHECK_VALUE(is_float_kind(gate.scalar_type()), op,
                    ": gate must be float32, bfloat16 or float16, got ", gate.scalar_type());
  TORCH_CHECK_VALUE(other.sizes() == gate.sizes() && other.scalar_type() == gate.scalar_type(), op, ": ", name,
                    " must have gate's shape and dtype, got ", other.sizes(), " ", other.scalar_type(), " for gate ",
                    gate.sizes(), " ", gate.scalar_type());
}

void run(cpu::SiluAndMulKernel* kernel, const cpu::SiluAndMul& p, int64_t numel) {
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) { kernel(p, begin, end); });
}

// gate and up as column blocks of one wider matrix (the engine's joined gate|up GEMM output, [N, 2I] chunked): rows
// with unit column stride, read in place row by row instead of copied whole by .contiguous().
bool strided_rows(const at::Tensor& gate, const at::Tensor& up) {
  return gate.dim() == 2 && gate.stride(1) == 1 && up.stride(1) == 1 && !(gate.is_contiguous() && up.is_contiguous());
}

at::Tensor silu_and_mul_rows(cpu::SiluAndMulKernel* kernel, const at::Tensor& gate, const at::Tensor& up) {
  at::Tensor out = at::empty(gate.sizes(), gate.options());  // [R, C], contiguous
  const int64_t cols = gate.size(1);
  const int64_t item = gate.element_size();
  const auto* g = static_cast<const char*>(gate.const_data_ptr());
  const auto* u = static_cast<const char*>(up.const_data_ptr());
  auto* o = static_cast<char*>(out.mutable_data_ptr());
  const int64_t gs = gate.stride(0) * item, us = up.stride(0) * item, os = cols * item;
  const FloatKind kind = float_kind_of(gate.scalar_type());
  at::parallel_for(0, gate.size(0), std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t r = begin; r < end; ++r) {
                       const cpu::SiluAndMul p{g + r * gs, u + r * us, nullptr, o + r * os, nullptr, kind};
                       kernel(p, 0, cols);
                     }
                   });
  return out;
}

at::Tensor silu_and_mul_cpu(const at::Tensor& gate_in, const at::Tensor& up_in) {
  check_pair("silu_and_mul", "up", gate_in, up_in);
  if (strided_rows(gate_in, up_in)) {
    return silu_and_mul_rows(TAO_CPU_KERNEL(silu_and_mul_range), gate_in, up_in);
  }
  const at::Tensor gate = gate_in.contiguous();
  const at::Tensor up = up_in.contiguous();
  at::Tensor out = at::empty(gate.sizes(), gate.options());
  cpu::SiluAndMul p{gate.const_data_ptr(), up.const_data_ptr(), nullptr, out.mutable_data_ptr(), nullptr,
                    float_kind_of(gate.scalar_type())};
  run(TAO_CPU_KERNEL(silu_and_mul_range), p, gate.numel());
  return out;
}

std::tuple<at::Tensor, at::Tensor> silu_and_mul_backward_cpu(const at::Tensor& grad_in, const at::Tensor& gate_in,
                                                             const at::Tensor& up_in) {
  check_pair("silu_and_mul_backward", "up", gate_in, up_in);
  check_pair("silu_and_mul_backward", "grad_out", gate_in, grad_in);
  const at::Tensor gate = gate_in.contiguous();
  const at::Tensor up = up_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();  // autograd may hand an expanded (stride 0) gradient
  at::Tensor grad_gate = at::empty(gate.sizes(), gate.options());
  at::Tensor grad_up = at::empty(gate.sizes(), gate.options());
  cpu::SiluAndMul p{gate.const_data_ptr(), up.const_data_ptr(), grad.const_data_ptr(), grad_gate.mutable_data_ptr(),
                    grad_up.mutable_data_ptr(), float_kind_of(gate.scalar_type())};
  run(TAO_CPU_KERNEL(silu_and_mul_backward_range), p, gate.numel());
  return {grad_gate, grad_up};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("silu_and_mul", &silu_and_mul_cpu);
  m.impl("silu_and_mul_backward", &silu_and_mul_backward_cpu);
}

}  // namespace tao_engine
