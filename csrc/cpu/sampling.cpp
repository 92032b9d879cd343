// CPU host code of sample (tao_engine/ops/sampling.py is the specification): argument checks, choice of the per-ISA
// row kernels (sampling_kernels.h) and the split of rows across threads with at::parallel_for. Schema: csrc/ops.cpp.
// Inference only: no autograd.

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <string>
#include <tuple>

#include "../token_logprobs_rows.h"
#include "sampling_kernels.h"

namespace tao_engine {
namespace {

constexpr const char* kOp = "tao_engine::sample";

cpu::SampleRowsFn sample_kernel() {
#if TAO_CPU_AVX2_KERNELS
  if (cpu::use_avx2_kernels()) {
    return &cpu::AVX2::sample_rows;
  }
#endif
  return &cpu::DEFAULT::sample_rows;
}

LogitsDtype logits_dtype(const at::Tensor& logits) {
  const auto dtype = logits.scalar_type();
  TORCH_CHECK_VALUE(
      dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf, kOp,
      ": logits must be float32, bfloat16 or float16, got ", dtype);
  if (dtype == at::kBFloat16) {
    return LogitsDtype::kBFloat16;
  }
  return dtype == at::kHalf ? LogitsDtype::kFloat16 : LogitsDtype::kFloat32;
}

// A per-row parameter: [B], of exactly `dtype` (the Python backend converts), on the logits' device. ValueError,
// as the reference raises.
at::Tensor checked_row_param(
    const at::Tensor& logits, const at::Tensor& param, const char* name, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(
      param.dim() == 1 && param.size(0) == logits.size(0), kOp, ": ", name, " must be [B] = [", logits.size(0),
      "] (one value per logits row), got shape ", param.sizes());
  TORCH_CHECK_VALUE(param.scalar_type() == dtype, kOp, ": ", name, " must be ", dtype, ", got ", param.scalar_type());
  TORCH_CHECK_VALUE(
      param.device() == logits.device(), kOp, ": ", name, " is on ", param.device(), " but logits are on ",
      logits.device());
  return param.contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample_cpu(
    const at::Tensor& logits_in, const at::Tensor& temperature_in, const at::Tensor& top_k_in,
    const at::Tensor& top_p_in, const at::Tensor& min_p_in, const at::Tensor& seeds_in, const at::Tensor& steps_in) {
  TORCH_CHECK_VALUE(
      logits_in.dim() == 2 && logits_in.size(1) >= 1, kOp, ": logits must be a float [B, V] tensor with V >= 1, got ",
      logits_in.scalar_type(), " ", logits_in.sizes());
  const LogitsDtype dtype = logits_dtype(logits_in);
  TORCH_CHECK_VALUE(
      logits_in.size(1) <= std::numeric_limits<int32_t>::max(), kOp, ": V = ", logits_in.size(1),
      " is too large (token ids are int32 inside the kernel)");
  // Rows may have any stride (a column slice is read in place); a strided last dim is copied.
  const at::Tensor logits = logits_in.stride(1) == 1 ? logits_in : logits_in.contiguous();
  const at::Tensor temperature = checked_row_param(logits, temperature_in, "temperature", at::kFloat);
  const at::Tensor top_k = checked_row_param(logits, top_k_in, "top_k", at::kLong);
  const at::Tensor top_p = checked_row_param(logits, top_p_in, "top_p", at::kFloat);
  const at::Tensor min_p = checked_row_param(logits, min_p_in, "min_p", at::kFloat);
  const at::Tensor seeds = checked_row_param(logits, seeds_in, "seeds", at::kLong);
  const at::Tensor steps = checked_row_param(logits, steps_in, "steps", at::kLong);

  const int64_t num_rows = logits.size(0);
  at::Tensor tokens = at::empty({num_rows}, logits.options().dtype(at::kLong));
  at::Tensor logprobs = at::empty({num_rows}, logits.options().dtype(at::kFloat));
  at::Tensor raw_logprobs = at::empty({num_rows}, logits.options().dtype(at::kFloat));
  const cpu::SampleOutputs out{
      .tokens = tokens.mutable_data_ptr<int64_t>(),
      .logprobs = logprobs.mutable_data_ptr<float>(),
      .raw_logprobs = raw_logprobs.mutable_data_ptr<float>(),
  };
  const TokenLogprobsRows raw_rows{
      .logits = logits.const_data_ptr(),
      .row_stride = logits.stride(0),
      .num_rows = num_rows,
      .vocab = logits.size(1),
      .dtype = dtype,
      .targets = out.tokens,  // a row's raw log-prob is computed right after its token is written
      .inv_temperature = 1.0f,
  };
  const cpu::SamplingRows rows{
      .logits = logits.const_data_ptr(),
      .row_stride = logits.stride(0),
      .vocab = logits.size(1),
      .dtype = dtype,
      .temperature = temperature.const_data_ptr<float>(),
      .top_k = top_k.const_data_ptr<int64_t>(),
      .top_p = top_p.const_data_ptr<float>(),
      .min_p = min_p.const_data_ptr<float>(),
      .seeds = seeds.const_data_ptr<int64_t>(),
      .steps = steps.const_data_ptr<int64_t>(),
      .raw = raw_rows,
  };
  const cpu::SampleRowsFn kernel = sample_kernel();
  // One row is tens of microseconds of work at LLM vocabulary sizes: rows are the unit of parallel work.
  at::parallel_for(0, num_rows, 1, [&](int64_t begin, int64_t end) { kernel(rows, out, begin, end); });
  return {tokens, logprobs, raw_logprobs};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("sample", &sample_cpu);
}

}  // namespace tao_engine
