// CPU host code of silu_and_mul (out = silu(gate) * up) and its backward: argument checks, the choice of the per-ISA
// kernels (activation_kernels.h) and the split of elements over threads with at::parallel_for. Schemas: csrc/ops.cpp;
// specification: tao_engine/ops/activation.py.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "../float_kind_of.h"
#include "activation_kernels.h"

namespace tao_engine {
namespace {

// Elements one thread handles before another is worth waking: a decode step's [64, 1536] (~0.1 ms) stays on one
// thread, as in rms_norm.cpp; a training batch's [2048, 1536] splits.
constexpr int64_t kGrain = 1 << 18;

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

at::Tensor silu_and_mul_cpu(const at::Tensor& gate_in, const at::Tensor& up_in) {
  check_pair("silu_and_mul", "up", gate_in, up_in);
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
