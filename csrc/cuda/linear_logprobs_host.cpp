// CUDA host code of linear_logprobs and its backward: the CPU op's argument checks and messages, the vocabulary
// blocking, the GEMMs through ATen (cuBLAS) into one reused fp32 buffer, and the row kernels of linear_logprobs.cu.
// The [N, V] logits never exist: the forward keeps [N] statistics, the backward recomputes each block's logits; the
// frozen-weight forward keeps E_p[W] (and Cov_p(z, W)) [N, H] instead, for a backward without GEMMs.
// Compiled only in CUDA builds. Target ranges are asserted on the device (a host check would cost a sync).

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include "linear_logprobs_launch.h"

namespace tao_engine {
namespace {

// The logits buffer holds at most kBlockFloats fp32 values (128 MiB): small next to [N, V] at training sizes, big
// enough that each GEMM runs near cuBLAS's peak. Rows per block stay under the grid's y limit of the backward.
constexpr int64_t kBlockFloats = int64_t{32} << 20;
constexpr int64_t kMaxBlockRows = 16384;
constexpr int64_t kMinBlockCols = 1024;
constexpr int64_t kMaxBlockCols = 32768;

struct Blocking {
  int64_t rows;
  int64_t cols;
};

Blocking choose_blocking(int64_t num_rows, int64_t vocab) {
  const int64_t rows = std::clamp<int64_t>(num_rows, 1, kMaxBlockRows);
  int64_t cols = std::clamp<int64_t>(kBlockFloats / rows, kMinBlockCols, kMaxBlockCols);
  cols = std::min(cols / 128 * 128, vocab);
  return {rows, std::max<int64_t>(cols, 1)};
}

bool is_supported_float(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf;
}

void check_args(const char* op, const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                double temperature) {
  TORCH_CHECK_VALUE(hidden.dim() == 2, op,
                    ": hidden must be 2-D [N, H] (flatten batch and sequence dims first), got shape ", hidden.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(1) == hidden.size(1), op, ": weight must be 2-D [V, H] with H = ",
                    hidden.size(1), " (hidden.size(1)), got shape ", weight.sizes());
  TORCH_CHECK_VALUE(weight.size(0) > 0, op, ": weight must have V > 0 rows, got shape ", weight.sizes());
  TORCH_CHECK_VALUE(is_supported_float(hidden.scalar_type()) && is_supported_float(weight.scalar_type()), op,
                    ": hidden and weight must be float32, bfloat16 or float16, got ", hidden.scalar_type(), " and ",
                    weight.scalar_type());
  TORCH_CHECK_VALUE(targets.dim() == 1 && targets.size(0) == hidden.size(0), op, ": targets must be 1-D [N] with N = ",
                    hidden.size(0), " (hidden.size(0)), got shape ", targets.sizes());
  TORCH_CHECK_VALUE(targets.scalar_type() == at::kLong, op, ": targets must be int64 (torch.long), got ",
                    targets.scalar_type());
  TORCH_CHECK_VALUE(weight.device() == hidden.device() && targets.device() == hidden.device(), op,
                    ": hidden, weight and targets must be on one device, got ", hidden.device(), ", ", weight.device(),
                    " and ", targets.device());
  TORCH_CHECK(hidden.is_cuda(), op, ": hidden must be a CUDA tensor, got ", hidden.device());
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature > 0.0, op,
                    ": temperature must be finite and > 0, got ", temperature);
}

at::Tensor row_vector(const char* op, const char* name, const at::Tensor& t, int64_t num_rows) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == num_rows && t.scalar_type() == at::kFloat, op, ": ", name,
                    " must be a float32 [N] tensor with N = ", num_rows, ", got ", t.scalar_type(), " of shape ",
                    t.sizes());
  return t.contiguous();
}

// The logits of rows [row0, row0 + rows) and vocabulary block `w` [cols, H] written into `buffer`, contiguous.
at::Tensor block_logits(at::Tensor& buffer, const at::Tensor& hidden32, const at::Tensor& w, int64_t row0,
                        int64_t rows) {
  at::Tensor logits = buffer.narrow(0, 0, rows * w.size(0)).view({rows, w.size(0)});  // [rows, cols]
  at::mm_out(logits, hidden32.narrow(0, row0, rows), w.t());
  return logits;
}

cuda::LinearLogitsBlock describe_block(at::Tensor& logits, int64_t row0, int64_t col0, int64_t vocab,
                                       const at::Tensor& targets, float inv_t) {
  return {logits.mutable_data_ptr<float>(), row0, logits.size(0), col0, logits.size(1), vocab,
          targets.const_data_ptr<int64_t>(), inv_t};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_logprobs_cuda(const at::Tensor& hidden, const at::Tensor& weight,
                                                                    const at::Tensor& targets_in, double temperature) {
  constexpr const char* op = "tao_engine::linear_logprobs";
  check_args(op, hidden, weight, targets_in, temperature);
  const c10::cuda::CUDAGuard guard(hidden.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor targets = targets_in.contiguous();
  const int64_t num_rows = hidden.size(0);
  const int64_t vocab = weight.size(0);
  const auto f32 = hidden.options().dtype(at::kFloat);
  const at::Tensor hidden32 = hidden.to(at::kFloat).contiguous();  // [N, H]
  at::Tensor run_max = at::full({num_rows}, -std::numeric_limits<float>::infinity(), f32);
  at::Tensor sum_exp = at::zeros({num_rows}, f32);
  at::Tensor sum_exp_shifted = at::zeros({num_rows}, f32);
  at::Tensor target_z = at::zeros({num_rows}, f32);  // every target lies in exactly one block, which writes it
  const cuda::LinearRunningStats stats{run_max.mutable_data_ptr<float>(), sum_exp.mutable_data_ptr<float>(),
                                       sum_exp_shifted.mutable_data_ptr<float>(), target_z.mutable_data_ptr<float>()};
  const Blocking blocking = choose_blocking(num_rows, vocab);
  at::Tensor buffer = at::empty({blocking.rows * blocking.cols}, f32);
  const auto inv_t = static_cast<float>(1.0 / temperature);
  for (int64_t col0 = 0; col0 < vocab && num_rows > 0; col0 += blocking.cols) {
    const at::Tensor w = weight.narrow(0, col0, std::min(blocking.cols, vocab - col0)).to(at::kFloat);  // [cols, H]
    for (int64_t row0 = 0; row0 < num_rows; row0 += blocking.rows) {
      at::Tensor logits = block_logits(buffer, hidden32, w, row0, std::min(blocking.rows, num_rows - row0));
      cuda::launch_linear_logprobs_forward_block(describe_block(logits, row0, col0, vocab, targets, inv_t), stats,
                                                 stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  const at::Tensor log_sum = sum_exp.log();
  at::Tensor lse = run_max.add(log_sum);
  // Both clamps only undo rounding (see csrc/cpu/linear_logprobs.cpp).
  at::Tensor logprobs = target_z.sub(lse).clamp_max(0.0);
  at::Tensor entropy = log_sum.sub(sum_exp_shifted.div(sum_exp)).clamp_min(0.0);
  return {logprobs, entropy, lse};
}

std::tuple<at::Tensor, at::Tensor> linear_logprobs_backward_cuda(
    const at::Tensor& grad_logprobs_in, const at::Tensor& grad_entropy_in, const at::Tensor& hidden,
    const at::Tensor& weight, const at::Tensor& targets_in, const at::Tensor& lse_in, const at::Tensor& entropy_in,
    double temperature, bool compute_grad_hidden, bool compute_grad_weight) {
  constexpr const char* op = "tao_engine::linear_logprobs_backward";
  check_args(op, hidden, weight, targets_in, temperature);
  const c10::cuda::CUDAGuard guard(hidden.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor targets = targets_in.contiguous();
  const int64_t num_rows = hidden.size(0);
  const int64_t vocab = weight.size(0);
  const at::Tensor grad_logprobs = row_vector(op, "grad_logprobs", grad_logprobs_in, num_rows);
  const at::Tensor grad_entropy = row_vector(op, "grad_entropy", grad_entropy_in, num_rows);
  const at::Tensor lse = row_vector(op, "lse", lse_in, num_rows);
  const at::Tensor entropy = row_vector(op, "entropy", entropy_in, num_rows);

  const auto f32 = hidden.options().dtype(at::kFloat);
  const at::Tensor hidden32 = hidden.to(at::kFloat).contiguous();  // [N, H]
  at::Tensor grad_hidden32 = compute_grad_hidden ? at::zeros(hidden.sizes(), f32) : at::Tensor();
  const bool weight_is_f32 = weight.scalar_type() == at::kFloat;
  at::Tensor grad_weight = compute_grad_weight ? at::zeros(weight.sizes(), weight.options()) : at::Tensor();
  const Blocking blocking = choose_blocking(num_rows, vocab);
  at::Tensor buffer = at::empty({blocking.rows * blocking.cols}, f32);
  at::Tensor grad_weight_acc =
      compute_grad_weight && !weight_is_f32 ? at::empty({blocking.cols, weight.size(1)}, f32) : at::Tensor();
  const cuda::LinearRowGradients grads{lse.const_data_ptr<float>(), entropy.const_data_ptr<float>(),
                                       grad_logprobs.const_data_ptr<float>(), grad_entropy.const_data_ptr<float>()};
  const auto inv_t = static_cast<float>(1.0 / temperature);
  const bool any_grad = compute_grad_hidden || compute_grad_weight;
  for (int64_t col0 = 0; col0 < vocab && num_rows > 0 && any_grad; col0 += blocking.cols) {
    const int64_t cols = std::min(blocking.cols, vocab - col0);
    const at::Tensor w = weight.narrow(0, col0, cols).to(at::kFloat);  // [cols, H]
    at::Tensor grad_w_rows = !compute_grad_weight ? at::Tensor()
                             : weight_is_f32      ? grad_weight.narrow(0, col0, cols)
                                                  : grad_weight_acc.narrow(0, 0, cols);
    for (int64_t row0 = 0; row0 < num_rows; row0 += blocking.rows) {
      const int64_t rows = std::min(blocking.rows, num_rows - row0);
      at::Tensor logits = block_logits(buffer, hidden32, w, row0, rows);
      cuda::launch_linear_logprobs_backward_block(describe_block(logits, row0, col0, vocab, targets, inv_t), grads,
                                                  stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
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
                           : hidden.scalar_type() == at::kFloat ? grad_hidden32
                                                                : grad_hidden32.to(hidden.scalar_type());
  if (!compute_grad_weight) {
    grad_weight = at::empty({0}, weight.options());
  }
  return {grad_hidden, grad_weight};
}

// The frozen-weight forward (csrc/cpu/linear_logprobs_frozen_weight.cpp explains the math): the forward's statistics
// plus E_p[W] and, with entropy_grad, Cov_p(z, W) [N, H] fp32, so that the backward needs no GEMM. Per block the row
// kernel overwrites the logits with e^(z - m) and reports each row's rescaling; the sums move to the new max here
// ([rows, H] elementwise) before one GEMM (two with entropy_grad) adds the block.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_logprobs_frozen_weight_cuda(
    const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets_in, double temperature,
    bool entropy_grad) {
  constexpr const char* op = "tao_engine::linear_logprobs_frozen_weight";
  check_args(op, hidden, weight, targets_in, temperature);
  const c10::cuda::CUDAGuard guard(hidden.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor targets = targets_in.contiguous();
  const int64_t num_rows = hidden.size(0);
  const int64_t vocab = weight.size(0);
  const auto f32 = hidden.options().dtype(at::kFloat);
  const at::Tensor hidden32 = hidden.to(at::kFloat).contiguous();  // [N, H]
  at::Tensor run_max = at::full({num_rows}, -std::numeric_limits<float>::infinity(), f32);
  at::Tensor sum_exp = at::zeros({num_rows}, f32);
  at::Tensor sum_exp_shifted = at::zeros({num_rows}, f32);
  at::Tensor target_z = at::zeros({num_rows}, f32);
  at::Tensor rescale = at::ones({num_rows}, f32);
  at::Tensor shift = at::zeros({num_rows}, f32);
  const cuda::LinearRunningStats stats{run_max.mutable_data_ptr<float>(), sum_exp.mutable_data_ptr<float>(),
                                       sum_exp_shifted.mutable_data_ptr<float>(), target_z.mutable_data_ptr<float>()};
  at::Tensor weight_sum = at::zeros(hidden.sizes(), f32);  // [N, H]: sum e^(z - m) W_v
  at::Tensor shifted_weight_sum = entropy_grad ? at::zeros(hidden.sizes(), f32) : at::Tensor();  // (z - m)-weighted
  const Blocking blocking = choose_blocking(num_rows, vocab);
  at::Tensor buffer = at::empty({blocking.rows * blocking.cols}, f32);
  at::Tensor shifted_buffer = entropy_grad ? at::empty({blocking.rows * blocking.cols}, f32) : at::Tensor();
  const auto inv_t = static_cast<float>(1.0 / temperature);
  for (int64_t col0 = 0; col0 < vocab && num_rows > 0; col0 += blocking.cols) {
    const int64_t cols = std::min(blocking.cols, vocab - col0);
    const at::Tensor w = weight.narrow(0, col0, cols).to(at::kFloat);  // [cols, H]
    for (int64_t row0 = 0; row0 < num_rows; row0 += blocking.rows) {
      const int64_t rows = std::min(blocking.rows, num_rows - row0);
      at::Tensor logits = block_logits(buffer, hidden32, w, row0, rows);
      at::Tensor shifted_probs =
          entropy_grad ? shifted_buffer.narrow(0, 0, rows * cols).view({rows, cols}) : at::Tensor();
      const cuda::LinearWeightMoments moments{
          entropy_grad ? shifted_probs.mutable_data_ptr<float>() : nullptr, rescale.mutable_data_ptr<float>(),
          shift.mutable_data_ptr<float>()};
      cuda::launch_linear_logprobs_forward_weights_block(describe_block(logits, row0, col0, vocab, targets, inv_t),
                                                         stats, moments, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      // `logits` now holds e^(z - m). The sums move to the new max as S and U do: U' = r (U + shift S), S' = r S.
      const at::Tensor row_rescale = rescale.narrow(0, row0, rows).unsqueeze(1);  // [rows, 1]
      at::Tensor sum_rows = weight_sum.narrow(0, row0, rows);
      if (entropy_grad) {
        at::Tensor shifted_rows = shifted_weight_sum.narrow(0, row0, rows);
        shifted_rows.addcmul_(sum_rows, shift.narrow(0, row0, rows).unsqueeze(1)).mul_(row_rescale);
        shifted_rows.addmm_(shifted_probs, w);
      }
      sum_rows.mul_(row_rescale).addmm_(logits, w);
    }
  }
  const at::Tensor log_sum = sum_exp.log();
  at::Tensor lse = run_max.add(log_sum);
  at::Tensor logprobs = target_z.sub(lse).clamp_max(0.0);
  at::Tensor entropy = log_sum.sub(sum_exp_shifted.div(sum_exp)).clamp_min(0.0);
  const at::Tensor inv_sum = sum_exp.reciprocal().unsqueeze(1);  // [N, 1]
  at::Tensor mean_weight = weight_sum.mul_(inv_sum);  // E_p[W]
  at::Tensor entropy_weight = at::empty({0}, f32);
  if (entropy_grad) {  // Cov_p(z, W) = sum e^(z - m) (z - m) W / S - (U / S) E_p[W]
    const at::Tensor mean_shift = sum_exp_shifted.mul(inv_sum.squeeze(1)).neg_().unsqueeze(1);  // [N, 1]: -U / S
    entropy_weight = shifted_weight_sum.mul_(inv_sum).addcmul_(mean_weight, mean_shift);
  }
  return {logprobs, entropy, lse, mean_weight, entropy_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CUDA, m) {
  m.impl("linear_logprobs", &linear_logprobs_cuda);
  m.impl("linear_logprobs_backward", &linear_logprobs_backward_cuda);
  m.impl("linear_logprobs_frozen_weight", &linear_logprobs_frozen_weight_cuda);
}

}  // namespace tao_engine
