// CUDA host code of linear_logprobs and its backward: the argument checks, vocabulary blocking and GEMMs through ATen
// (cuBLAS) into one reused fp32 buffer shared with CPU (csrc/linear_logprobs.h), and the row kernels of
// linear_logprobs.cu.
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

#include "../linear_logprobs.h"
#include "linear_logprobs_launch.h"

namespace tao_engine {
namespace {

using linear_logprobs::RunningTensors;

// The logits buffer holds at most 32 Mi fp32 values (128 MiB): small next to [N, V] at training sizes, big enough
// that each GEMM runs near cuBLAS's peak. Rows per block stay under the grid's y limit of the backward.
constexpr linear_logprobs::BlockLimits kCudaBlocks{
    .floats = int64_t{32} << 20, .max_rows = 16384, .min_cols = 1024, .max_cols = 32768, .col_multiple = 128};

// The shared checks (csrc/linear_logprobs.h), then this kernel's device.
void check_args(const char* op, const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                double temperature) {
  linear_logprobs::check_args(op, hidden, weight, targets, temperature, [op](const at::Tensor& t) {
    TORCH_CHECK(t.is_cuda(), op, ": hidden must be a CUDA tensor, got ", t.device());
  });
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
  linear_logprobs::LogitsWalk walk(hidden, vocab, kCudaBlocks);
  RunningTensors running = RunningTensors::start(num_rows, walk.hidden32.options());
  const auto stats = running.raw<cuda::LinearRunningStats>();
  const auto inv_t = static_cast<float>(1.0 / temperature);
  walk.for_each_block(weight, [&](at::Tensor& logits, const at::Tensor&, int64_t row0, int64_t col0) {
    cuda::launch_linear_logprobs_forward_block(describe_block(logits, row0, col0, vocab, targets, inv_t), stats,
                                               stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return running.finish();
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
  const at::Tensor grad_logprobs = linear_logprobs::row_vector(op, "grad_logprobs", grad_logprobs_in, num_rows);
  const at::Tensor grad_entropy = linear_logprobs::row_vector(op, "grad_entropy", grad_entropy_in, num_rows);
  const at::Tensor lse = linear_logprobs::row_vector(op, "lse", lse_in, num_rows);
  const at::Tensor entropy = linear_logprobs::row_vector(op, "entropy", entropy_in, num_rows);
  const cuda::LinearRowGradients grads{lse.const_data_ptr<float>(), entropy.const_data_ptr<float>(),
                                       grad_logprobs.const_data_ptr<float>(), grad_entropy.const_data_ptr<float>()};
  const auto inv_t = static_cast<float>(1.0 / temperature);
  return linear_logprobs::backward_blocks(
      hidden, weight, compute_grad_hidden, compute_grad_weight, kCudaBlocks,
      [&](at::Tensor& logits, int64_t row0, int64_t col0) {
        cuda::launch_linear_logprobs_backward_block(describe_block(logits, row0, col0, vocab, targets, inv_t), grads,
                                                    stream);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
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
  linear_logprobs::LogitsWalk walk(hidden, vocab, kCudaBlocks);
  const auto f32 = walk.hidden32.options();
  RunningTensors running = RunningTensors::start(num_rows, f32);
  const auto stats = running.raw<cuda::LinearRunningStats>();
  at::Tensor rescale = at::ones({num_rows}, f32);
  at::Tensor shift = at::zeros({num_rows}, f32);
  linear_logprobs::WeightSums sums(walk, entropy_grad);
  const auto inv_t = static_cast<float>(1.0 / temperature);
  walk.for_each_block(weight, [&](at::Tensor& logits, const at::Tensor& w, int64_t row0, int64_t col0) {
    at::Tensor shifted_probs = sums.shifted_probs(logits);
    const cuda::LinearWeightMoments moments{
        entropy_grad ? shifted_probs.mutable_data_ptr<float>() : nullptr, rescale.mutable_data_ptr<float>(),
        shift.mutable_data_ptr<float>()};
    cuda::launch_linear_logprobs_forward_weights_block(describe_block(logits, row0, col0, vocab, targets, inv_t),
                                                       stats, moments, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    // `logits` now holds e^(z - m). The sums move to the new max as S and U do: U' = r (U + shift S), S' = r S.
    const int64_t rows = logits.size(0);
    const at::Tensor row_rescale = rescale.narrow(0, row0, rows).unsqueeze(1);  // [rows, 1]
    at::Tensor sum_rows = sums.sum.narrow(0, row0, rows);
    if (entropy_grad) {
      at::Tensor shifted_rows = sums.shifted_sum.narrow(0, row0, rows);
      shifted_rows.addcmul_(sum_rows, shift.narrow(0, row0, rows).unsqueeze(1)).mul_(row_rescale);
      shifted_rows.addmm_(shifted_probs, w);
    }
    sum_rows.mul_(row_rescale).addmm_(logits, w);
  });
  return sums.finish(running);
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CUDA, m) {
  m.impl("linear_logprobs", &linear_logprobs_cuda);
  m.impl("linear_logprobs_backward", &linear_logprobs_backward_cuda);
  m.impl("linear_logprobs_frozen_weight", &linear_logprobs_frozen_weight_cuda);
}

}  // namespace tao_engine
