// Host code shared by the CPU and CUDA implementations of linear_logprobs, its backward and
// linear_logprobs_frozen_weight (csrc/cpu/linear_logprobs*.cpp, csrc/cuda/linear_logprobs_host.cpp): argument checks
// with the reference's messages, the vocabulary blocking, one block of logits through ATen's GEMM into a reused fp32
// buffer, the [N] running statistics of the forward and what the forwards return from them, and the backward's walk
// over blocks. Each device supplies its block sizes and the row kernels that run on a block. Schemas: csrc/ops.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

#include "float_kind_of.h"

namespace tao_engine::linear_logprobs {

// How a device cuts [N, V] logits into blocks: at most `floats` fp32 values per block, all rows up to max_rows in one
// block (the grad_weight GEMM then reduces over a long batch dimension), the vocabulary block narrowed to fit.
struct BlockLimits {
  int64_t floats;
  int64_t max_rows;
  int64_t min_cols;
  int64_t max_cols;
  int64_t col_multiple;  // whole vectors (CPU) or tiles (CUDA) except in the last block
};

struct Blocking {
  int64_t rows;
  int64_t cols;
};

inline Blocking choose_blocking(int64_t num_rows, int64_t vocab, const BlockLimits& limits) {
  const int64_t rows = std::clamp<int64_t>(num_rows, 1, limits.max_rows);
  int64_t cols = std::clamp<int64_t>(limits.floats / rows, limits.min_cols, limits.max_cols);
  cols = std::min(cols / limits.col_multiple * limits.col_multiple, vocab);
  return {rows, std::max<int64_t>(cols, 1)};
}

// ValueError for every bad argument, as the torch reference raises, whichever backend runs; check_device(hidden)
// adds the device's own requirement once the tensors are known to share a device.
template <typename DeviceCheck>
void check_args(const char* op, const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                double temperature, DeviceCheck&& check_device) {
  TORCH_CHECK_VALUE(
      hidden.dim() == 2, op, ": hidden must be 2-D [N, H] (flatten batch and sequence dims first), got shape ",
      hidden.sizes());
  TORCH_CHECK_VALUE(
      weight.dim() == 2 && weight.size(1) == hidden.size(1), op, ": weight must be 2-D [V, H] with H = ",
      hidden.size(1), " (hidden.size(1)), got shape ", weight.sizes());
  TORCH_CHECK_VALUE(weight.size(0) > 0, op, ": weight must have V > 0 rows, got shape ", weight.sizes());
  TORCH_CHECK_VALUE(
      is_float_kind(hidden.scalar_type()) && is_float_kind(weight.scalar_type()), op,
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
  check_device(hidden);
  TORCH_CHECK_VALUE(
      std::isfinite(temperature) && temperature > 0.0, op, ": temperature must be finite and > 0, got ",
      temperature);
}

// A per-row fp32 input of the backward ([N]); autograd often hands expanded (stride 0) gradients.
inline at::Tensor row_vector(const char* op, const char* name, const at::Tensor& t, int64_t num_rows) {
  TORCH_CHECK_VALUE(
      t.dim() == 1 && t.size(0) == num_rows && t.scalar_type() == at::kFloat, op, ": ", name,
      " must be a float32 [N] tensor with N = ", num_rows, ", got ", t.scalar_type(), " of shape ", t.sizes());
  return t.contiguous();
}

// weight[col0 : col0 + cols] in fp32: a view for fp32 weights (any strides: the GEMM takes them), else a copy.
inline at::Tensor weight_block(const at::Tensor& weight, int64_t col0, int64_t cols) {
  return weight.narrow(0, col0, cols).to(at::kFloat);
}

// The walk over blocks of [N, V] logits that every forward and backward makes: hidden in fp32, the blocking and one
// reused fp32 buffer that ATen's GEMM writes each block into.
struct LogitsWalk {
  at::Tensor hidden32;  // [N, H]; no copy for contiguous fp32
  Blocking blocking;
  at::Tensor buffer;

  LogitsWalk(const at::Tensor& hidden, int64_t vocab, const BlockLimits& limits)
      : hidden32(hidden.to(at::kFloat).contiguous()),
        blocking(choose_blocking(hidden.size(0), vocab, limits)),
        buffer(at::empty({blocking.rows * blocking.cols}, hidden32.options())) {}

  // Calls f(logits, w, row0, col0) per block, vocabulary blocks outer: w = weight[col0 : col0 + cols] in fp32 and
  // logits [rows, cols] = hidden32[row0 : row0 + rows] @ w.T, contiguous in the buffer.
  template <typename F>
  void for_each_block(const at::Tensor& weight, F&& f) {
    const int64_t num_rows = hidden32.size(0);
    const int64_t vocab = weight.size(0);
    for (int64_t col0 = 0; col0 < vocab && num_rows > 0; col0 += blocking.cols) {
      const at::Tensor w = weight_block(weight, col0, std::min(blocking.cols, vocab - col0));  // [cols, H]
      for (int64_t row0 = 0; row0 < num_rows; row0 += blocking.rows) {
        const int64_t rows = std::min(blocking.rows, num_rows - row0);
        at::Tensor logits = buffer.narrow(0, 0, rows * w.size(0)).view({rows, w.size(0)});
        at::mm_out(logits, hidden32.narrow(0, row0, rows), w.t());
        f(logits, w, row0, col0);
      }
    }
  }
};

// The forwards' per-row running statistics, [N] fp32 each: the max m of z = logits / T so far, S = sum e^(z - m),
// U = sum e^(z - m) (z - m) and the target's z (every target lies in exactly one block, which writes it).
struct RunningTensors {
  at::Tensor run_max;
  at::Tensor sum_exp;
  at::Tensor sum_exp_shifted;
  at::Tensor target_z;

  static RunningTensors start(int64_t num_rows, const at::TensorOptions& f32) {
    return {at::full({num_rows}, -std::numeric_limits<float>::infinity(), f32), at::zeros({num_rows}, f32),
            at::zeros({num_rows}, f32), at::zeros({num_rows}, f32)};
  }

  // The device's raw view for its row kernels: a struct of the four pointers in this order.
  template <typename Raw>
  Raw raw() {
    return Raw{run_max.mutable_data_ptr<float>(), sum_exp.mutable_data_ptr<float>(),
               sum_exp_shifted.mutable_data_ptr<float>(), target_z.mutable_data_ptr<float>()};
  }

  // (logprobs, entropy, lse) [N] fp32. Both clamps only undo rounding: z_target <= max and S >= 1 make the log-prob
  // <= 0, and U <= 0 makes the entropy >= 0. A log-prob > 0 would be a probability > 1, which ratios downstream must
  // never see.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> finish() const {
    const at::Tensor log_sum = sum_exp.log();
    at::Tensor lse = run_max.add(log_sum);
    at::Tensor logprobs = target_z.sub(lse).clamp_max(0.0);
    at::Tensor entropy = log_sum.sub(sum_exp_shifted.div(sum_exp)).clamp_min(0.0);
    return {logprobs, entropy, lse};
  }
};

// linear_logprobs_frozen_weight's [N, H] fp32 weight sums, relative to the running max m: sum e^(z - m) W_v and, with
// entropy_grad, sum e^(z - m) (z - m) W_v, with a buffer for each block's e^(z - m) (z - m).
struct WeightSums {
  at::Tensor sum;
  at::Tensor shifted_sum;  // undefined without entropy_grad, as is shifted_buffer
  at::Tensor shifted_buffer;

  WeightSums(const LogitsWalk& walk, bool entropy_grad)
      : sum(at::zeros(walk.hidden32.sizes(), walk.hidden32.options())),
        shifted_sum(entropy_grad ? at::zeros(walk.hidden32.sizes(), walk.hidden32.options()) : at::Tensor()),
        shifted_buffer(entropy_grad ? at::empty(walk.buffer.sizes(), walk.buffer.options()) : at::Tensor()) {}

  // Where the row kernel writes the block's e^(z - m) (z - m), [rows, cols] like `logits`; undefined without
  // entropy_grad.
  at::Tensor shifted_probs(const at::Tensor& logits) const {
    return shifted_buffer.defined()
        ? shifted_buffer.narrow(0, 0, logits.numel()).view({logits.size(0), logits.size(1)})
        : at::Tensor();
  }

  // (logprobs, entropy, lse, E_p[W] [N, H], Cov_p(z, W) [N, H] or [0]) once every block is in; the sums are
  // overwritten.
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> finish(const RunningTensors& stats) {
    auto [logprobs, entropy, lse] = stats.finish();
    // E_p[W] = sum e^(z - m) W / S. Cov_p(z, W) = sum e^(z - m) (z - m) W / S - (U / S) E_p[W], as U / S = E_p[z] - m:
    // relative to the max, so no large numbers cancel.
    const at::Tensor inv_sum = stats.sum_exp.reciprocal().unsqueeze(1);  // [N, 1]
    at::Tensor mean_weight = sum.mul_(inv_sum);  // [N, H]
    at::Tensor entropy_weight = at::empty({0}, stats.sum_exp.options());
    if (shifted_sum.defined()) {
      const at::Tensor mean_shift = stats.sum_exp_shifted.mul(inv_sum.squeeze(1)).neg_().unsqueeze(1);  // -U/S [N, 1]
      entropy_weight = shifted_sum.mul_(inv_sum).addcmul_(mean_weight, mean_shift);  // [N, H]
    }
    return {logprobs, entropy, lse, mean_weight, entropy_weight};
  }
};

// The backward (row inputs already checked) as a walk over blocks: to_grad_logits(logits, row0, col0) turns each
// block's logits in place into d loss / d logits [rows, cols], which GEMMs push into grad_hidden and into that
// block's rows of grad_weight. Returns (grad_hidden, grad_weight); one not asked for comes back empty (the autograd
// formula turns it into None).
template <typename ToGradLogits>
std::tuple<at::Tensor, at::Tensor> backward_blocks(const at::Tensor& hidden, const at::Tensor& weight,
                                                   bool compute_grad_hidden, bool compute_grad_weight,
                                                   const BlockLimits& limits, ToGradLogits&& to_grad_logits) {
  LogitsWalk walk(hidden, weight.size(0), limits);
  const auto f32 = walk.hidden32.options();
  // grad_hidden accumulates over vocabulary blocks in fp32; grad_weight rows are written block by block, straight
  // into the result for fp32 weights, else through an fp32 [cols, H] accumulator copied out after the block's last
  // rows.
  at::Tensor grad_hidden32 = compute_grad_hidden ? at::zeros(hidden.sizes(), f32) : at::Tensor();
  const bool weight_is_f32 = weight.scalar_type() == at::kFloat;
  at::Tensor grad_weight = compute_grad_weight ? at::empty(weight.sizes(), weight.options()) : at::Tensor();
  if (compute_grad_weight && hidden.size(0) == 0) {
    grad_weight.zero_();
  }
  at::Tensor grad_weight_acc = compute_grad_weight && !weight_is_f32
                                   ? at::empty({walk.blocking.cols, weight.size(1)}, f32)
                                   : at::Tensor();
  const auto add_block = [&](at::Tensor& logits, const at::Tensor& w, int64_t row0, int64_t col0) {
    const int64_t rows = logits.size(0);
    const int64_t cols = logits.size(1);
    to_grad_logits(logits, row0, col0);
    if (compute_grad_hidden) {
      grad_hidden32.narrow(0, row0, rows).addmm_(logits, w);
    }
    if (compute_grad_weight) {
      at::Tensor grad_w_rows = weight_is_f32 ? grad_weight.narrow(0, col0, cols) : grad_weight_acc.narrow(0, 0, cols);
      const at::Tensor hidden_rows = walk.hidden32.narrow(0, row0, rows);
      if (row0 == 0) {
        at::mm_out(grad_w_rows, logits.t(), hidden_rows);
      } else {
        grad_w_rows.addmm_(logits.t(), hidden_rows);
      }
      if (!weight_is_f32 && row0 + rows == hidden.size(0)) {
        grad_weight.narrow(0, col0, cols).copy_(grad_w_rows);
      }
    }
  };
  if (compute_grad_hidden || compute_grad_weight) {
    walk.for_each_block(weight, add_block);
  }
  at::Tensor grad_hidden = !compute_grad_hidden ? at::empty({0}, hidden.options())
                           : hidden.scalar_type() == at::kFloat ? grad_hidden32
                                                                : grad_hidden32.to(hidden.scalar_type());
  if (!compute_grad_weight) {
    grad_weight = at::empty({0}, weight.options());
  }
  return {grad_hidden, grad_weight};
}

}  // namespace tao_engine::linear_logprobs
