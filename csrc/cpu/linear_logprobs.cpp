// CPU host code of linear_logprobs: log_softmax(hidden @ weight.T / T)[target] and the entropy of that distribution,
// in fp32, without ever holding the [N, V] logits. The vocabulary (and, past kMaxBlockRows, the batch) is walked in
// blocks: ATen's GEMM writes one fp32 block of logits into a reused buffer, and the row kernels of
// linear_logprobs_kernels.h fold it into per-row running statistics (forward) or turn it in place into d loss /
// d logits, which two more GEMMs push into grad_hidden and into that block's rows of grad_weight (backward). The
// forward keeps only [N] statistics; the backward recomputes each block's logits. Host code shared with CUDA:
// csrc/linear_logprobs.h; the frozen-weight variant without recomputation: linear_logprobs_frozen_weight.cpp.
// Schemas: csrc/ops.cpp.

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>

#include "linear_logprobs_host.h"
#include "linear_logprobs_kernels.h"

namespace tao_engine {
namespace {

using linear_logprobs::kCpuBlocks;
using linear_logprobs::RunningTensors;

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_logprobs_cpu(
    const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets_in, double temperature) {
  constexpr const char* op = "tao_engine::linear_logprobs";
  linear_logprobs::check_cpu_args(op, hidden, weight, targets_in, temperature);
  const at::Tensor targets = targets_in.contiguous();
  const int64_t num_rows = hidden.size(0);
  const int64_t vocab = weight.size(0);
  linear_logprobs::check_targets_in_range(op, targets, vocab);

  linear_logprobs::LogitsWalk walk(hidden, vocab, kCpuBlocks);
  RunningTensors running = RunningTensors::start(num_rows, walk.hidden32.options());
  const auto stats = running.raw<cpu::RunningStats>();
  cpu::ForwardBlockKernel* const kernel = TAO_CPU_KERNEL(linear_logprobs_forward_block);
  const auto inv_t = static_cast<float>(1.0 / temperature);
  walk.for_each_block(weight, [&](at::Tensor& logits, const at::Tensor& w, int64_t row0, int64_t col0) {
    const cpu::LogitsBlock block{
        logits.mutable_data_ptr<float>(), row0, col0, w.size(0), targets.const_data_ptr<int64_t>(), inv_t};
    at::parallel_for(0, logits.size(0), linear_logprobs::row_grain(block.cols), [&](int64_t begin, int64_t end) {
      kernel(block, stats, begin, end);
    });
  });
  return running.finish();
}

std::tuple<at::Tensor, at::Tensor> linear_logprobs_backward_cpu(
    const at::Tensor& grad_logprobs_in, const at::Tensor& grad_entropy_in, const at::Tensor& hidden,
    const at::Tensor& weight, const at::Tensor& targets_in, const at::Tensor& lse_in, const at::Tensor& entropy_in,
    double temperature, bool compute_grad_hidden, bool compute_grad_weight) {
  constexpr const char* op = "tao_engine::linear_logprobs_backward";
  linear_logprobs::check_cpu_args(op, hidden, weight, targets_in, temperature);
  const at::Tensor targets = targets_in.contiguous();
  const int64_t num_rows = hidden.size(0);
  linear_logprobs::check_targets_in_range(op, targets, weight.size(0));
  const at::Tensor grad_logprobs = linear_logprobs::row_vector(op, "grad_logprobs", grad_logprobs_in, num_rows);
  const at::Tensor grad_entropy = linear_logprobs::row_vector(op, "grad_entropy", grad_entropy_in, num_rows);
  const at::Tensor lse = linear_logprobs::row_vector(op, "lse", lse_in, num_rows);
  const at::Tensor entropy = linear_logprobs::row_vector(op, "entropy", entropy_in, num_rows);

  cpu::BackwardBlockKernel* const kernel = TAO_CPU_KERNEL(linear_logprobs_backward_block);
  const cpu::RowGradients grads{
      lse.const_data_ptr<float>(), entropy.const_data_ptr<float>(), grad_logprobs.const_data_ptr<float>(),
      grad_entropy.const_data_ptr<float>()};
  const auto inv_t = static_cast<float>(1.0 / temperature);
  return linear_logprobs::backward_blocks(
      hidden, weight, compute_grad_hidden, compute_grad_weight, kCpuBlocks,
      [&](at::Tensor& logits, int64_t row0, int64_t col0) {
        const cpu::LogitsBlock block{
            logits.mutable_data_ptr<float>(), row0, col0, logits.size(1), targets.const_data_ptr<int64_t>(), inv_t};
        at::parallel_for(0, logits.size(0), linear_logprobs::row_grain(block.cols), [&](int64_t begin, int64_t end) {
          kernel(block, grads, begin, end);
        });
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("linear_logprobs", &linear_logprobs_cpu);
  m.impl("linear_logprobs_backward", &linear_logprobs_backward_cpu);
}

}  // namespace tao_engine
