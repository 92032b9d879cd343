// Argument checks and outputs shared by the CPU and CUDA implementations of sample (csrc/cpu/sampling.cpp,
// csrc/cuda/sampling_host.cpp), so both devices reject bad input with the reference's messages and its ValueError.
// Schema: csrc/ops.cpp; specification: tao_engine/ops/sampling.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <tuple>

#include "float_kind_of.h"

namespace tao_engine {

constexpr const char* kSampleOp = "tao_engine::sample";

inline void check_sample_logits_shape(const at::Tensor& logits) {
  TORCH_CHECK_VALUE(
      logits.dim() == 2 && logits.size(1) >= 1, kSampleOp, ": logits must be a float [B, V] tensor with V >= 1, got ",
      logits.scalar_type(), " ", logits.sizes());
}

inline FloatKind sample_logits_kind(const at::Tensor& logits) {
  TORCH_CHECK_VALUE(
      is_float_kind(logits.scalar_type()), kSampleOp, ": logits must be float32, bfloat16 or float16, got ",
      logits.scalar_type());
  return float_kind_of(logits.scalar_type());
}

// A per-row parameter: [B], of exactly `dtype` (the Python backend converts), on the logits' device.
inline at::Tensor checked_row_param(
    const at::Tensor& logits, const at::Tensor& param, const char* name, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(
      param.dim() == 1 && param.size(0) == logits.size(0), kSampleOp, ": ", name, " must be [B] = [", logits.size(0),
      "] (one value per logits row), got shape ", param.sizes());
  TORCH_CHECK_VALUE(
      param.scalar_type() == dtype, kSampleOp, ": ", name, " must be ", dtype, ", got ", param.scalar_type());
  TORCH_CHECK_VALUE(
      param.device() == logits.device(), kSampleOp, ": ", name, " is on ", param.device(), " but logits are on ",
      logits.device());
  return param.contiguous();
}

// A call's inputs after the per-row checks: every tensor as the kernels read it.
struct SampleInputs {
  at::Tensor logits;  // [B, V], unit stride along V
  at::Tensor temperature;  // [B] each, contiguous
  at::Tensor top_k;
  at::Tensor top_p;
  at::Tensor min_p;
  at::Tensor seeds;
  at::Tensor steps;
};

// logits_in must have passed check_sample_logits_shape and sample_logits_kind.
inline SampleInputs checked_sample_inputs(
    const at::Tensor& logits_in, const at::Tensor& temperature, const at::Tensor& top_k, const at::Tensor& top_p,
    const at::Tensor& min_p, const at::Tensor& seeds, const at::Tensor& steps) {
  // Rows may have any stride (a column slice is read in place); a strided last dim is copied.
  const at::Tensor logits = logits_in.stride(1) == 1 ? logits_in : logits_in.contiguous();
  return SampleInputs{
      .logits = logits,
      .temperature = checked_row_param(logits, temperature, "temperature", at::kFloat),
      .top_k = checked_row_param(logits, top_k, "top_k", at::kLong),
      .top_p = checked_row_param(logits, top_p, "top_p", at::kFloat),
      .min_p = checked_row_param(logits, min_p, "min_p", at::kFloat),
      .seeds = checked_row_param(logits, seeds, "seeds", at::kLong),
      .steps = checked_row_param(logits, steps, "steps", at::kLong),
  };
}

// (tokens int64, logprobs fp32, raw_logprobs fp32), each [B] on the logits' device.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> empty_sample_outputs(const at::Tensor& logits) {
  const int64_t num_rows = logits.size(0);
  return {at::empty({num_rows}, logits.options().dtype(at::kLong)),
          at::empty({num_rows}, logits.options().dtype(at::kFloat)),
          at::empty({num_rows}, logits.options().dtype(at::kFloat))};
}

}  // namespace tao_engine
