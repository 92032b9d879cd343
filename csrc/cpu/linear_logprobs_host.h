// CPU side of the host code of the linear_logprobs ops (csrc/cpu/linear_logprobs.cpp: forward and recomputing
// backward; csrc/cpu/linear_logprobs_frozen_weight.cpp: the forward that also keeps the softmax-weighted weight rows
// so the backward needs no GEMM): the CPU's block sizes, its checks beyond the shared ones (csrc/linear_logprobs.h)
// and the split of a block's rows over threads.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>

#include "../linear_logprobs.h"

namespace tao_engine::linear_logprobs {

// The logits buffer holds 4 Mi fp32 values (16 MiB): small next to the [N, V] logits it replaces, big enough that
// each GEMM runs at full speed. Vocabulary blocks are whole 16-float vectors except the last.
constexpr BlockLimits kCpuBlocks{
    .floats = int64_t{4} << 20, .max_rows = 4096, .min_cols = 256, .max_cols = 8192, .col_multiple = 16};

// The shared checks; the CPU dispatch key already puts hidden on the CPU.
inline void check_cpu_args(
    const char* op, const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets, double temperature) {
  check_args(op, hidden, weight, targets, temperature, [](const at::Tensor&) {});
}

inline void check_targets_in_range(const char* op, const at::Tensor& targets, int64_t vocab) {
  const int64_t* t = targets.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < targets.numel(); ++i) {
    TORCH_CHECK_VALUE(
        t[i] >= 0 && t[i] < vocab, op, ": targets[", i, "] = ", t[i], " is out of range for a weight with V = ",
        vocab, " rows (targets must be in [0, V))");
  }
}

// Rows per parallel task, so that a task handles at least ATen's own grain of values (TensorIterator's 32768).
inline int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1));
}

}  // namespace tao_engine::linear_logprobs
