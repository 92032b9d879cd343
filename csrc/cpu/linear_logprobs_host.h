// Host helpers shared by the CPU linear_logprobs ops (csrc/cpu/linear_logprobs.cpp: forward and recomputing
// backward; csrc/cpu/linear_logprobs_frozen_weight.cpp: the forward that also keeps the softmax-weighted weight rows
// so the backward needs no GEMM): argument checks with the reference's messages, the vocabulary blocking, and one
// block of logits through ATen's GEMM into a reused fp32 buffer.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/mm.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>

namespace tao_engine::linear_logprobs_host {

// The logits buffer holds kBlockFloats fp32 values (16 MiB): small next to the [N, V] logits it replaces, big enough
// that each GEMM runs at full speed. All rows up to kMaxBlockRows go in one block, so the grad_weight GEMM
// (d_logits.T @ hidden) reduces over a long batch dimension; the vocabulary block narrows to fit the buffer.
constexpr int64_t kBlockFloats = int64_t{4} << 20;
constexpr int64_t kMaxBlockRows = 4096;
constexpr int64_t kMinBlockCols = 256;
constexpr int64_t kMaxBlockCols = 8192;

struct Blocking {
  int64_t rows;
  int64_t cols;
};

inline Blocking choose_blocking(int64_t num_rows, int64_t vocab) {
  const int64_t rows = std::clamp<int64_t>(num_rows, 1, kMaxBlockRows);
  int64_t cols = std::clamp<int64_t>(kBlockFloats / rows, kMinBlockCols, kMaxBlockCols);
  cols = std::min(cols / 16 * 16, vocab);  // whole vectors except in the last block
  return {rows, std::max<int64_t>(cols, 1)};
}

inline bool is_supported_float(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf;
}

// ValueError for every bad argument, as the torch reference raises, whichever backend runs.
inline void check_args(
    const char* op, const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets, double temperature) {
  TORCH_CHECK_VALUE(
      hidden.dim() == 2, op, ": hidden must be 2-D [N, H] (flatten batch and sequence dims first), got shape ",
      hidden.sizes());
  TORCH_CHECK_VALUE(
      weight.dim() == 2 && weight.size(1) == hidden.size(1), op, ": weight must be 2-D [V, H] with H = ",
      hidden.size(1), " (hidden.size(1)), got shape ", weight.sizes());
  TORCH_CHECK_VALUE(weight.size(0) > 0, op, ": weight must have V > 0 rows, got shape ", weight.sizes());
  TORCH_CHECK_VALUE(
      is_supported_float(hidden.scalar_type()) && is_supported_float(weight.scalar_type()), op,
      ": hidden and weight must be float32, bfloat16 or float16, got ", hidden.scalar_type(), " and ",
      weight.scalar_type());
  TORCH_CHECK_VALUE(
      targets.dim() == 1 && targets.size(0) == hidden.size(0), op, ": targets must be 1-D [N] with N = ",
      hidden.size(0), " (hidden.size(0)), got shape ", targets.sizes());
  TORCH_CHECK_VALUE(
      targets.scalar_type() == at::kLong, op, ": targets must be int64 (torch.long), got ", targets.scalar_type());
  TORCH_CHECK_VALUE(
      weight.device() == hidden.device() && targets.device() == hidden.device(), op,
      ": hidden, weight and targets must be on one device, got ", hidden.device(), ", ", weight.device(), " and ",
      targets.device());
  TORCH_CHECK_VALUE(
      std::isfinite(temperature) && temperature > 0.0, op, ": temperature must be finite and > 0, got ",
      temperature);
}

inline void check_targets_in_range(const char* op, const at::Tensor& targets, int64_t vocab) {
  const int64_t* t = targets.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < targets.numel(); ++i) {
    TORCH_CHECK_VALUE(
        t[i] >= 0 && t[i] < vocab, op, ": targets[", i, "] = ", t[i], " is out of range for a weight with V = ",
        vocab, " rows (targets must be in [0, V))");
  }
}

// A per-row fp32 input of the backward ([N]); autograd often hands expanded (stride 0) gradients.
inline at::Tensor row_vector(const char* op, const char* name, const at::Tensor& t, int64_t num_rows) {
  TORCH_CHECK_VALUE(
      t.dim() == 1 && t.size(0) == num_rows && t.scalar_type() == at::kFloat, op, ": ", name,
      " must be a float32 [N] tensor with N = ", num_rows, ", got ", t.scalar_type(), " of shape ", t.sizes());
  return t.contiguous();
}

// Rows per parallel task, so that a task handles at least ATen's own grain of values (TensorIterator's 32768).
inline int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1));
}

// weight[col0 : col0 + cols] in fp32: a view for fp32 weights (any strides: the GEMM takes them), else a copy.
inline at::Tensor weight_block(const at::Tensor& weight, int64_t col0, int64_t cols) {
  return weight.narrow(0, col0, cols).to(at::kFloat);
}

// The logits of rows [row0, row0 + rows) and vocabulary block `w` written into `buffer` as a contiguous block.
inline at::Tensor block_logits(
    at::Tensor& buffer, const at::Tensor& hidden32, const at::Tensor& w, int64_t row0, int64_t rows) {
  at::Tensor logits = buffer.narrow(0, 0, rows * w.size(0)).view({rows, w.size(0)});  // [rows, cols]
  at::mm_out(logits, hidden32.narrow(0, row0, rows), w.t());
  return logits;
}

// (logprobs, entropy, lse) [N] fp32 from the running statistics of the forward (linear_logprobs_kernels.h): the max m,
// S = sum e^(z - m), U = sum e^(z - m) (z - m) and the target's z. Both clamps only undo rounding: z_target <= max and
// S >= 1 make the log-prob <= 0, and U <= 0 makes the entropy >= 0. A log-prob > 0 would be a probability > 1, which
// ratios downstream must never see.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> finish_forward(
    const at::Tensor& run_max, const at::Tensor& sum_exp, const at::Tensor& sum_exp_shifted,
    const at::Tensor& target_z) {
  const at::Tensor log_sum = sum_exp.log();
  at::Tensor lse = run_max.add(log_sum);
  at::Tensor logprobs = target_z.sub(lse).clamp_max(0.0);
  at::Tensor entropy = log_sum.sub(sum_exp_shifted.div(sum_exp)).clamp_min(0.0);
  return {logprobs, entropy, lse};
}

}  // namespace tao_engine::linear_logprobs_host
