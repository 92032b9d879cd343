// Launchers of the linear_logprobs CUDA row kernels (csrc/cuda/linear_logprobs.cu). The host code
// (csrc/cuda/linear_logprobs_host.cpp) walks the vocabulary in blocks: cuBLAS (through at::mm) writes one fp32 block of
// logits, then these kernels fold it into per-row running statistics (forward) or turn it in place into
// d loss / d logits (backward).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tao_engine::cuda {

// One [rows, cols] block of raw logits x = hidden @ weight[col0 : col0 + cols].T, contiguous, rows row0 + r.
struct LinearLogitsBlock {
  float* logits;
  int64_t row0;
  int64_t rows;
  int64_t col0;
  int64_t cols;
  int64_t vocab;  // V, for the target range assertion
  const int64_t* targets;  // [N]
  float inv_temperature;
};

// Per-row running statistics of z = x / T over the blocks seen: max m, sum exp(z - m), sum exp(z - m) (z - m), and
// z at the target. The host initializes m = -inf and the sums to 0.
struct LinearRunningStats {
  float* max;
  float* sum_exp;
  float* sum_exp_shifted;
  float* target_z;
};

// Per-row inputs of the backward: lse and entropy of the forward, upstream gradients of logprobs and entropy.
struct LinearRowGradients {
  const float* lse;
  const float* entropy;
  const float* grad_logprobs;
  const float* grad_entropy;
};

// The frozen-weight forward's extra outputs per block: the block overwritten with e^(z - m) (m the row's running max
// after it) and, when shifted_probs is set, e^(z - m) (z - m) [rows, cols]; per row ([N]) the factor e^(m_old - m)
// and the shift m_old - m with which the host moves the [N, H] weight sums to the new max before adding the block.
struct LinearWeightMoments {
  float* shifted_probs;  // [rows, cols] or nullptr
  float* rescale;  // [N]
  float* shift;  // [N]
};

// One block of threads per row: the block's max, then its sums relative to the new running max.
void launch_linear_logprobs_forward_block(
    const LinearLogitsBlock& block, const LinearRunningStats& stats, cudaStream_t stream);

// As launch_linear_logprobs_forward_block, and writes the block's weights (LinearWeightMoments) in place.
void launch_linear_logprobs_forward_weights_block(const LinearLogitsBlock& block, const LinearRunningStats& stats,
                                                  const LinearWeightMoments& moments, cudaStream_t stream);

// Element-wise: x <- (g_lp (onehot - p) - g_ent p (log p + H)) / T, p = exp(x / T - lse).
void launch_linear_logprobs_backward_block(
    const LinearLogitsBlock& block, const LinearRowGradients& grads, cudaStream_t stream);

}  // namespace tao_engine::cuda
