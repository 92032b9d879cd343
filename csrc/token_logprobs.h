// Argument checks shared by the CPU and CUDA implementations of token_logprobs and its backward, so both devices
// reject bad input with the same messages (schemas live in csrc/ops.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "float_kind_of.h"
#include "token_logprobs_rows.h"

namespace tao_engine {

// Validates logits [N, V] (fp32/bf16/fp16), targets [N] int64 and temperature; returns logits with a unit last-dim
// stride. Rows may have any stride (a column slice of a wider tensor is read in place); only a last dim that is
// not contiguous is copied, because the kernels stream each row.
inline at::Tensor check_token_logprobs_args(
    const char* op, const at::Tensor& logits, const at::Tensor& targets, double temperature) {
  TORCH_CHECK(
      logits.dim() == 2, op, ": logits must be 2-D [N, V] (flatten batch and sequence dims first), got shape ",
      logits.sizes());
  TORCH_CHECK(
      is_float_kind(logits.scalar_type()), op, ": logits must be float32, bfloat16 or float16, got ",
      logits.scalar_type());
  TORCH_CHECK(
      targets.dim() == 1 && targets.size(0) == logits.size(0), op, ": targets must be 1-D [N] with N = ",
      logits.size(0), " (logits.size(0)), got shape ", targets.sizes());
  TORCH_CHECK(
      targets.scalar_type() == at::kLong, op, ": targets must be int64 (torch.long), got ", targets.scalar_type());
  TORCH_CHECK(
      targets.device() == logits.device(), op, ": targets must be on the same device as logits (", logits.device(),
      "), got ", targets.device());
  TORCH_CHECK(
      logits.size(1) > 0 || logits.size(0) == 0, op, ": logits must have a vocabulary dim V > 0, got shape ",
      logits.sizes());
  // ValueError, like the torch reference, so callers see one exception type whichever backend runs.
  TORCH_CHECK_VALUE(
      std::isfinite(temperature) && temperature > 0.0, op, ": temperature must be finite and > 0, got ",
      temperature);
  return logits.stride(1) == 1 ? logits : logits.contiguous();
}

// Extra checks of the backward: grad_out is the fp32 [N] gradient of token_logprobs' output.
inline void check_token_logprobs_grad(const char* op, const at::Tensor& grad_out, const at::Tensor& logits) {
  TORCH_CHECK(
      grad_out.dim() == 1 && grad_out.size(0) == logits.size(0), op, ": grad_out must be 1-D [N] with N = ",
      logits.size(0), ", got shape ", grad_out.sizes());
  TORCH_CHECK(
      grad_out.scalar_type() == at::kFloat, op, ": grad_out must be float32 (the dtype of token_logprobs' output), got ",
      grad_out.scalar_type());
  TORCH_CHECK(
      grad_out.device() == logits.device(), op, ": grad_out must be on the same device as logits (", logits.device(),
      "), got ", grad_out.device());
}

// The raw view of a checked call for the kernels; logits must come from check_token_logprobs_args and targets be
// contiguous.
inline TokenLogprobsRows describe_token_logprobs_rows(
    const at::Tensor& logits, const at::Tensor& targets, double temperature) {
  return TokenLogprobsRows{
      .logits = logits.const_data_ptr(),
      .row_stride = logits.stride(0),
      .num_rows = logits.size(0),
      .vocab = logits.size(1),
      .dtype = float_kind_of(logits.scalar_type()),
      .targets = targets.const_data_ptr<int64_t>(),
      .inv_temperature = static_cast<float>(1.0 / temperature),
  };
}

}  // namespace tao_engine
