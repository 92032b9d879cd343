// CPU host code of linear_logprobs: log_softmax(hidden @ weight.T / T)[target] and the entropy of that distribution,
// in fp32, without ever holding the [N, V] logits. The vocabulary (and, past kMaxBlockRows, the batch) is walked in
// blocks: ATen's GEMM writes one fp32 block of logits into a reused buffer, and the row kernels of
// linear_logprobs_kernels.h fold it into per-row running statistics (forward) or turn it in place into d loss /
// d logits, which two more GEMMs push into grad_hidden and into that block's rows of grad_weight (backward). The
// forward keeps only [N] statistics; the backward recomputes each block's logits. Shared host helpers:
// linear_logprobs_host.h; the frozen-weight variant without recomputation: linear_logprobs_frozen_weight.cpp.
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

using cpu::BackwardBlockFn;
using cpu::ForwardBlockFn;
using linear_logprobs_host::Blocking;
using linear_logprobs_host::block_logits;
using linear_logprobs_host::check_args;
using linear_logprobs_host::check_targets_in_range;
using linear_logprobs_host::choose_blocking;
using linear_logprobs_host::row_grain;
using linear_logprobs_host::row_vector;
using linear_logprobs_host::weight_block;

ForwardBlockFn forward_kernel() {
#if TAO_CPU_AVX2_KERNELS
  if (cpu::use_avx2_kernels()) {
    return &cpu::AVX2::linear_logprobs_forward_block;
  }
#endif
  return &cpu::DEFAULT::linear_logprobs_forward_block;
}

BackwardBlockFn backward_kernel() {
#if TAO_CPU_AVX2_KERNELS
  if (cpu::use_avx2_kernels()) {
    return &cpu::AVX2::linear_logprobs_backward_block;
  }
#endif
  return &cpu::DEFAULT::linear_logprobs_backward_block;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_logprobs_cpu(
    const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets_in, double temperature) {
  constexpr const char* op = "tao_engine::linear_logprobs";
  check_args(op, hidden, weight, targets_in, temperature);
  const at::Tensor targets = targets_in.contiguous();
  const int64_t num_rows = hidden.size(0);
  const int64_t vocab = weight.size(0);
  check_targets_in_range(op, targets, vocab);

  const auto f32 = hidden.options().dtype(at::kFloat);
  const at::Tensor hidden32 = hidden.to(at::kFloat).contiguous();  // [N, H]; no copy for contiguous fp32
  at::Tensor run_max = at::full({num_rows}, -std::numeric_limits<float>::infinity(), f32);
  at::Tensor sum_exp = at::zeros({num_rows}, f32);
  at::Tensor sum_exp_shifted = at::zeros({num_rows}, f32);
  at::Tensor target_z = at::empty({num_rows}, f32);  // every target lies in exactly one block, which writes it
  const cpu::RunningStats stats{
      run_max.mutable_data_ptr<float>(), sum_exp.mutable_data_ptr<float>(),
      sum_exp_shifted.mutable_data_ptr<float>(), target_z.mutable_data_ptr<float>()};

  const Blocking blocking = choose_blocking(num_rows, vocab);
  at::Tensor buffer = at::empty({blocking.rows * blocking.cols}, f32);
  const ForwardBlockFn kernel = forward_kernel();
  const auto inv_t = static_cast<float>(1.0 / temperature);
  for (int64_t col0 = 0; col0 < vocab && num_rows > 0; col0 += blocking.cols) {
    const at::Tensor w = weight_block(weight, col0, std::min(blocking.cols, vocab - col0));  // [cols, H]
    for (int64_t row0 = 0; row0 < num_rows; row0 += blocking.rows) {
      const int64_t rows = std::min(blocking.rows, num_rows - row0);
      at::Tensor logits = block_logits(buffer, hidden32, w, row0, rows);
      const cpu::LogitsBlock block{
          logits.mutable_data_ptr<float>(), row0, col0, w.size(0), targets.const_data_ptr<int64_t>(), inv_t};
      at::parallel_for(0, rows, row_grain(block.cols), [&](int64_t begin, int64_t end) {
        kernel(block, stats, begin, end);
      });
    }
  }
  return linear_logprobs_host::finish_forward(run_max, sum_exp, sum_exp_shifted, target_z);
}

std::tuple<at::Tensor, at::Tensor> linear_logprobs_backward_cpu(
    const at::Tensor& grad_logprobs_in, const at::Tensor& grad_entropy_in, const at::Tensor& hidden,
    const at::Tensor& weight, const at::Tensor& targets_in, const at::Tensor& lse_in, const at::Tensor& entropy_in,
    double temperature, bool compute_grad_hidden, bool compute_grad_weight) {
  constexpr const char* op = "tao_engine::linear_logprobs_backward";
  check_args(op, hidden, weight, targets_in, temperature);
  const at::Tensor targets = targets_in.contiguous();
  const int64_t num_rows = hidden.size(0);
  const int64_t vocab = weight.size(0);
  check_targets_in_range(op, targets, vocab);
  const at::Tensor grad_logprobs = row_vector(op, "grad_logprobs", grad_logprobs_in, num_rows);
  const at::Tensor grad_entropy = row_vector(op, "grad_entropy", grad_entropy_in, num_rows);
  const at::Tensor lse = row_vector(op, "lse", lse_in, num_rows);
  const at::Tensor entropy = row_vector(op, "entropy", entropy_in, num_rows);

  const auto f32 = hidden.options().dtype(at::kFloat);
  const at::Tensor hidden32 = hidden.to(at::kFloat).contiguous();  // [N, H]
  // grad_hidden accumulates over vocabulary blocks in fp32; grad_weight rows are written block by block, straight
  // into the result for fp32 weights, else through an fp32 [cols, H] accumulator.
  at::Tensor grad_hidden32 = compute_grad_hidden ? at::zeros(hidden.sizes(), f32) : at::Tensor();
  const bool weight_is_f32 = weight.scalar_type() == at::kFloat;
  at::Tensor grad_weight = compute_grad_weight ? at::empty(weight.sizes(), weight.options()) : at::Tensor();
  if (compute_grad_weight && num_rows == 0) {
    grad_weight.zero_();
  }

  const Blocking blocking = choose_blocking(num_rows, vocab);
  at::Tensor buffer = at::empty({blocking.rows * blocking.cols}, f32);
  at::Tensor grad_weight_acc = compute_grad_weight && !weight_is_f32
      ? at::empty({blocking.cols, weight.size(1)}, f32)
      : at::Tensor();
  const BackwardBlockFn kernel = backward_kernel();
  const cpu::RowGradients grads{
      lse.const_data_ptr<float>(), entropy.const_data_ptr<float>(), grad_logprobs.const_data_ptr<float>(),
      grad_entropy.const_data_ptr<float>()};
  const auto inv_t = static_cast<float>(1.0 / temperature);
  const bool any_grad = compute_grad_hidden || compute_grad_weight;
  for (int64_t col0 = 0; col0 < vocab && num_rows > 0 && any_grad; col0 += blocking.cols) {
    const int64_t cols = std::min(blocking.cols, vocab - col0);
    const at::Tensor w = weight_block(weight, col0, cols);  // [cols, H]
    at::Tensor grad_w_rows = !compute_grad_weight ? at::Tensor()
        : weight_is_f32                           ? grad_weight.narrow(0, col0, cols)
                                                  : grad_weight_acc.narrow(0, 0, cols);
    for (int64_t row0 = 0; row0 < num_rows; row0 += blocking.rows) {
      const int64_t rows = std::min(blocking.rows, num_rows - row0);
      at::Tensor logits = block_logits(buffer, hidden32, w, row0, rows);
      const cpu::LogitsBlock block{
          logits.mutable_data_ptr<float>(), row0, col0, cols, targets.const_data_ptr<int64_t>(), inv_t};
      at::parallel_for(0, rows, row_grain(cols), [&](int64_t begin, int64_t end) {
        kernel(block, grads, begin, end);
      });
      // `logits` now holds d loss / d logits [rows, cols].
      if (compute_grad_hidden) {
        grad_hidden32.narrow(0, row0, rows).addmm_(logits, w);
      }
      if (compute_grad_weight) {
        const at::Tensor hidden_rows = hidden32.narrow(0, row0, rows);
        if (row0 == 0) {
          at::mm_out(grad_w_rows, logits.t(), hidden_rows);
        } else {
          grad_w_rows.addmm_(logits.t(), hidden_rows);
        }
      }
    }
    if (compute_grad_weight && !weight_is_f32) {
      grad_weight.narrow(0, col0, cols).copy_(grad_w_rows);
    }
  }
  // Gradients not asked for come back as empty tensors (the autograd formula turns them into None).
  at::Tensor grad_hidden = !compute_grad_hidden ? at::empty({0}, hidden.options())
      : hidden.scalar_type() == at::kFloat      ? grad_hidden32
                                                : grad_hidden32.to(hidden.scalar_type());
  if (!compute_grad_weight) {
    grad_weight = at::empty({0}, weight.options());
  }
  return {grad_hidden, grad_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("linear_logprobs", &linear_logprobs_cpu);
  m.impl("linear_logprobs_backward", &linear_logprobs_backward_cpu);
}

}  // namespace tao_engine
