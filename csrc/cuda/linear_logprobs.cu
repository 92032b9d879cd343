// CUDA row kernels of linear_logprobs (device code and launchers; the GEMMs and glue are in linear_logprobs_host.cpp).
// The math is csrc/cpu/linear_logprobs_kernels_impl.h's: z = x / T; forward keeps, per row, the running max m,
// S = sum e^(z - m) and U = sum e^(z - m) (z - m) (so the entropy log S - U / S needs no difference of large
// numbers); a larger max m' rescales them: S' = S e^(m - m'), U' = e^(m - m') (U + S (m - m')). Backward, with
// y = z - lse = log p: d loss / d x = (g_lp (onehot - p) - g_ent p (y + H)) / T.

#include <c10/macros/Macros.h>  // CUDA_KERNEL_ASSERT_MSG
#include <cub/block/block_reduce.cuh>
#include <cuda_runtime.h>

#include <cstdint>

#include "linear_logprobs_launch.h"

namespace tao_engine::cuda {
namespace {

constexpr int kThreads = 256;
using FloatReduce = cub::BlockReduce<float, kThreads>;

// max that propagates NaN, so a NaN logit makes its row's results NaN as in the reference.
struct NanMax {
  __device__ __forceinline__ float operator()(float a, float b) const { return (a > b || isnan(a)) ? a : b; }
};

__global__ void __launch_bounds__(kThreads) forward_block_kernel(LinearLogitsBlock block, LinearRunningStats stats) {
  __shared__ typename FloatReduce::TempStorage scratch;
  __shared__ float shared_max;
  __shared__ float shared_old_max;
  const int64_t r = blockIdx.x;
  const int64_t i = block.row0 + r;
  const float* x = block.logits + r * block.cols;
  const float inv_t = block.inv_temperature;
  float local = -INFINITY;
  for (int64_t j = threadIdx.x; j < block.cols; j += blockDim.x) {
    local = NanMax()(local, x[j]);
  }
  const float block_max = FloatReduce(scratch).Reduce(local, NanMax());
  if (threadIdx.x == 0) {
    const int64_t target = block.targets[i];
    CUDA_KERNEL_ASSERT_MSG(target >= 0 && target < block.vocab,
                           "tao_engine::linear_logprobs: target out of range [0, V)");
    if (target >= block.col0 && target < block.col0 + block.cols) {
      stats.target_z[i] = x[target - block.col0] * inv_t;
    }
    // inv_t > 0 and rounding is monotonic, so max(x) * inv_t is exactly the max of the scaled values.
    shared_old_max = stats.max[i];
    shared_max = NanMax()(shared_old_max, block_max * inv_t);
  }
  __syncthreads();
  const float old_m = shared_old_max;
  const float m = shared_max;
  if (isnan(m) || m == -INFINITY) {
    if (threadIdx.x == 0 && isnan(m)) {
      stats.max[i] = stats.sum_exp[i] = stats.sum_exp_shifted[i] = NAN;
    }
    return;  // all -inf so far: nothing to add, and (-inf) - (-inf) would be NaN
  }
  float s = 0.0f;
  float u = 0.0f;
  for (int64_t j = threadIdx.x; j < block.cols; j += blockDim.x) {
    const float y = x[j] * inv_t - m;  // <= 0
    const float e = expf(y);
    s += e;
    u = fmaf(e, y, u);
  }
  const float block_s = FloatReduce(scratch).Sum(s);
  __syncthreads();
  const float block_u = FloatReduce(scratch).Sum(u);
  if (threadIdx.x == 0) {
    float run_s = stats.sum_exp[i];
    float run_u = stats.sum_exp_shifted[i];
    if (m > old_m && old_m != -INFINITY) {  // with old_m = -inf, the running sums are still 0
      const float shift = old_m - m;  // < 0
      const float rescale = expf(shift);
      run_u = rescale * (run_u + run_s * shift);
      run_s = rescale * run_s;
    }
    stats.max[i] = m;
    stats.sum_exp[i] = run_s + block_s;
    stats.sum_exp_shifted[i] = run_u + block_u;
  }
}

// forward_block_kernel for the frozen-weight forward: each thread reads its values of the row (the max pass), and
// after the barrier overwrites the same values with e^(z - m), so nothing is overwritten before it is read. The
// target's z is read by thread 0 before the barrier too. A NaN row writes NaN weights; an all -inf row zeros.
__global__ void __launch_bounds__(kThreads)
    forward_weights_block_kernel(LinearLogitsBlock block, LinearRunningStats stats, LinearWeightMoments moments) {
  __shared__ typename FloatReduce::TempStorage scratch;
  __shared__ float shared_max;
  __shared__ float shared_old_max;
  const int64_t r = blockIdx.x;
  const int64_t i = block.row0 + r;
  float* x = block.logits + r * block.cols;
  float* shifted_probs = moments.shifted_probs == nullptr ? nullptr : moments.shifted_probs + r * block.cols;
  const float inv_t = block.inv_temperature;
  float local = -INFINITY;
  for (int64_t j = threadIdx.x; j < block.cols; j += blockDim.x) {
    local = NanMax()(local, x[j]);
  }
  const float block_max = FloatReduce(scratch).Reduce(local, NanMax());
  if (threadIdx.x == 0) {
    const int64_t target = block.targets[i];
    CUDA_KERNEL_ASSERT_MSG(target >= 0 && target < block.vocab,
                           "tao_engine::linear_logprobs_frozen_weight: target out of range [0, V)");
    if (target >= block.col0 && target < block.col0 + block.cols) {
      stats.target_z[i] = x[target - block.col0] * inv_t;
    }
    shared_old_max = stats.max[i];
    shared_max = NanMax()(shared_old_max, block_max * inv_t);
  }
  __syncthreads();
  const float old_m = shared_old_max;
  const float m = shared_max;
  const bool grows = m > old_m && old_m != -INFINITY;  // with old_m = -inf, every running sum is still 0
  if (isnan(m) || m == -INFINITY) {
    const float fill = isnan(m) ? NAN : 0.0f;
    for (int64_t j = threadIdx.x; j < block.cols; j += blockDim.x) {
      x[j] = fill;
      if (shifted_probs != nullptr) {
        shifted_probs[j] = fill;
      }
    }
    if (threadIdx.x == 0) {
      if (isnan(m)) {
        stats.max[i] = stats.sum_exp[i] = stats.sum_exp_shifted[i] = NAN;
      }
      moments.rescale[i] = 1.0f;
      moments.shift[i] = 0.0f;
    }
    return;
  }
  float s = 0.0f;
  float u = 0.0f;
  for (int64_t j = threadIdx.x; j < block.cols; j += blockDim.x) {
    const float y = x[j] * inv_t - m;  // <= 0
    const float e = expf(y);
    s += e;
    u = fmaf(e, y, u);
    x[j] = e;
    if (shifted_probs != nullptr) {
      shifted_probs[j] = e * y;
    }
  }
  const float block_s = FloatReduce(scratch).Sum(s);
  __syncthreads();
  const float block_u = FloatReduce(scratch).Sum(u);
  if (threadIdx.x == 0) {
    const float shift = grows ? old_m - m : 0.0f;  // <= 0
    const float rescale = grows ? expf(shift) : 1.0f;
    const float run_s = stats.sum_exp[i];
    stats.max[i] = m;
    stats.sum_exp[i] = rescale * run_s + block_s;
    stats.sum_exp_shifted[i] = rescale * (stats.sum_exp_shifted[i] + run_s * shift) + block_u;
    moments.rescale[i] = rescale;
    moments.shift[i] = shift;
  }
}

__global__ void __launch_bounds__(kThreads) backward_block_kernel(LinearLogitsBlock block, LinearRowGradients grads) {
  const int64_t r = blockIdx.y;
  const int64_t i = block.row0 + r;
  const float inv_t = block.inv_temperature;
  // 1/T folded into the upstream gradients once: d/dx = (d/dz) / T.
  const float a = grads.grad_logprobs[i] * inv_t;
  const float b = grads.grad_entropy[i] * inv_t;
  const float lse = grads.lse[i];
  const float entropy = grads.entropy[i];
  const int64_t target = block.targets[i] - block.col0;
  float* x = block.logits + r * block.cols;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < block.cols;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float y = x[j] * inv_t - lse;  // log p (NaN when the forward was NaN)
    const float p = expf(y);
    x[j] = -p * fmaf(b, y + entropy, a) + (j == target ? a : 0.0f);
  }
}

}  // namespace

void launch_linear_logprobs_forward_block(
    const LinearLogitsBlock& block, const LinearRunningStats& stats, cudaStream_t stream) {
  if (block.rows == 0 || block.cols == 0) {
    return;
  }
  forward_block_kernel<<<static_cast<unsigned int>(block.rows), kThreads, 0, stream>>>(block, stats);
}

void launch_linear_logprobs_forward_weights_block(const LinearLogitsBlock& block, const LinearRunningStats& stats,
                                                  const LinearWeightMoments& moments, cudaStream_t stream) {
  if (block.rows == 0 || block.cols == 0) {
    return;
  }
  forward_weights_block_kernel<<<static_cast<unsigned int>(block.rows), kThreads, 0, stream>>>(block, stats, moments);
}

void launch_linear_logprobs_backward_block(
    const LinearLogitsBlock& block, const LinearRowGradients& grads, cudaStream_t stream) {
  if (block.rows == 0 || block.cols == 0) {
    return;
  }
  // Enough blocks along the columns to cover a row with one value per thread, at most 64 (rows give the rest).
  const int64_t col_blocks = (block.cols + kThreads - 1) / kThreads;
  const dim3 grid(static_cast<unsigned int>(col_blocks < 64 ? col_blocks : 64), static_cast<unsigned int>(block.rows));
  backward_block_kernel<<<grid, kThreads, 0, stream>>>(block, grads);
}

}  // namespace tao_engine::cuda
