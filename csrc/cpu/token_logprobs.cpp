// CPU host code of token_logprobs (log_softmax(logits / T)[target] in fp32) and its backward: argument checks,
// choice of the per-ISA row kernels (token_logprobs_kernels.h) and the split of rows across threads with
// at::parallel_for. Schemas: csrc/ops.cpp; checks shared with CUDA: csrc/token_logprobs.h.

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <string>

#include "../token_logprobs.h"
#include "token_logprobs_kernels.h"

namespace tao_engine {
namespace {


void check_targets_in_range(const char* op, const at::Tensor& targets, int64_t vocab) {
  const int64_t* t = targets.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < targets.numel(); ++i) {
    TORCH_CHECK(
        t[i] >= 0 && t[i] < vocab, op, ": targets[", i, "] = ", t[i], " is out of range for logits with V = ", vocab,
        " (targets must be in [0, V))");
  }
}

// Rows per task, so that a task streams at least as many values as ATen's own grain (TensorIterator's 32768):
// smaller tasks cost more in scheduling than they save.
int64_t row_grain(int64_t vocab) {
  constexpr int64_t kValuesPerTask = 32768;
  return std::max<int64_t>(1, kValuesPerTask / std::max<int64_t>(vocab, 1));
}

at::Tensor token_logprobs_cpu(const at::Tensor& logits_in, const at::Tensor& targets_in, double temperature) {
  constexpr const char* op = "tao_engine::token_logprobs";
  const at::Tensor logits = check_token_logprobs_args(op, logits_in, targets_in, temperature);
  const at::Tensor targets = targets_in.contiguous();
  check_targets_in_range(op, targets, logits.size(1));
  at::Tensor out = at::empty({logits.size(0)}, logits.options().dtype(at::kFloat));
  const TokenLogprobsRows rows = describe_token_logprobs_rows(logits, targets, temperature);
  cpu::ForwardRowsKernel* const kernel = TAO_CPU_KERNEL(token_logprobs_rows);
  float* result = out.mutable_data_ptr<float>();
  at::parallel_for(0, logits.size(0), row_grain(rows.vocab), [&](int64_t begin, int64_t end) {
    kernel(rows, result, begin, end);
  });
  return out;
}

at::Tensor token_logprobs_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& logits_in, const at::Tensor& targets_in, double temperature) {
  constexpr const char* op = "tao_engine::token_logprobs_backward";
  const at::Tensor logits = check_token_logprobs_args(op, logits_in, targets_in, temperature);
  check_token_logprobs_grad(op, grad_out_in, logits);
  const at::Tensor targets = targets_in.contiguous();
  const at::Tensor grad_out = grad_out_in.contiguous();  // autograd often hands an expanded (stride 0) gradient
  check_targets_in_range(op, targets, logits.size(1));
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());  // contiguous [N, V]
  const TokenLogprobsRows rows = describe_token_logprobs_rows(logits, targets, temperature);
  cpu::BackwardRowsKernel* const kernel = TAO_CPU_KERNEL(token_logprobs_backward_rows);
  const float* grad = grad_out.const_data_ptr<float>();
  void* result = grad_logits.mutable_data_ptr();
  at::parallel_for(0, logits.size(0), row_grain(rows.vocab), [&](int64_t begin, int64_t end) {
    kernel(rows, grad, result, begin, end);
  });
  return grad_logits;
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("token_logprobs", &token_logprobs_cpu);
  m.impl("token_logprobs_backward", &token_logprobs_backward_cpu);
}

}  // namespace tao_engine
