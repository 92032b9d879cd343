// CPU host code of linear_logprobs: log_softmax(hidden @ weight.T / T)[target] and the entropy of that distribution,
// in fp32, without ever holding the [N, V] logits. The vocabulary (and, past kMaxBlockRows, the batch) is walked in
// blocks: ATen's GEMM writes one fp32 block of logits into a reused buffer, and the row kernels of
// linear_logprobs_kernels.h fold it into per-row running statistics (forward) or turn it in place into d loss /
// d logits, which two more GEMMs push into grad_hidden and into that block's rows of grad_weight (backward). The
// forward keeps only [N] statistics; the backward recomputes each block's logits. Schemas: csrc/ops.cpp.

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

#include "linear_logprobs_kernels.h"

namespace tao_engine {
namespace {

using cpu::BackwardBlockFn;
using cpu::ForwardBlockFn;

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

Blocking choose_blocking(int64_t num_rows, int64_t vocab) {
  const int64_t rows = std::clamp<int64_t>(num_rows, 1, kMaxBlockRows);
  int64_t cols = std::clamp<int64_t>(kBlockFloats / rows, kMinBlockCols, kMaxBlockCols);
  cols = std::min(cols / 16 * 16, vocab);  // whole vectors except in the last block
  return {rows, std::max<int64_t>(cols, 1)};
}

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

bool is_supported_float(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf;
}

// ValueError for every bad argument, as the torch reference raises, whichever backend runs.
void check_args(
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

void check_targets_in_range(const char* op, const at::Tensor& targets, int64_t vocab) {
  const int64_t* t = targets.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < targets.numel(); ++i) {
    TORCH_CHECK_VALUE(
        t[i] >= 0 && t[i] < vocab, op, ": targets[", i, "] = ", t[i], " is out of range for a weight with V = ",
        vocab, " rows (targets must be in [0, V))");
  }
}

// A per-row fp32 input of the backward ([N]); autograd often hands expanded (stride 0) gradients.
at::Tensor row_vector(const char* op, const char* name, const at::Tensor& t, int64_t num_rows) {
  TORCH_CHECK_VALUE(
      t.dim() == 1 && t.size(0) == num_rows && t.scalar_type() == at::kFloat, op, ": ", name,
      " must be a float32 [N] tensor with N = ", num_rows, ", got ", t.scalar_type(), " of shape ", t.sizes());
  return t.contiguous();
}

// Rows per parallel task, so that a task handles at least ATen's own grain of values (TensorIterator's 32768).
int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1));
}

// weight[col0 : col0 + cols] in fp32: a view for fp32 weights (any strides: the GEMM takes them), else a copy.
at::Tensor weight_block(const at::Tensor& weight, int64_t col0, int64_t cols) {
  return weight.narrow(0, col0, cols).to(at::kFloat);
}

// The logits of rows [row0, row0 + rows) and vocabulary block `w` written into `buffer` as a contiguous block.
at::Tensor block_logits(at::Tensor& buffer, const at::Tensor& hidden32, const at::Tensor& w, int64_t row0,
                        int64_t rows) {
  at::Tensor logits = buffer.narrow(0, 0, rows * w.size(0)).view({rows, w.size(0)});  // [rows, cols]
  at::mm_out(logits, hidden32.narrow(0, row0, rows), w.t());
  return logits;
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
  const at::Tensor log_sum = sum_exp.log();
  at::Tensor lse = run_max.add(log_sum);
  // Both clamps only undo rounding: z_target <= max and sum_exp >= 1 make the log-prob <= 0, and sum_exp_shifted
  // <= 0 makes the entropy >= 0. A log-prob > 0 would be a probability > 1, which ratios downstream must never see.
  at::Tensor logprobs = target_z.sub(lse).clamp_max(0.0);
  at::Tensor entropy = log_sum.sub(sum_exp_shifted.div(sum_exp)).clamp_min(0.0);
  return {logprobs, entropy, lse};
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
