// Launcher of the group_advantages CUDA kernels (csrc/cuda/advantages.cu), called by csrc/cuda/advantages_host.cpp
// after it has checked the arguments and allocated the outputs. Formulas: tao_engine/ops/advantages.py.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tao_engine::cuda {

enum class AdvantageMode { kMean, kMeanStd, kLeaveOneOut, kMeanBatchStd, kNone };

// One group's statistics over its valid (non-NaN) rewards; the host allocates [P] of them as scratch.
struct GroupStats {
  int64_t count;  // valid rewards
  double sum_sq;  // sum of (r - mean)^2 over the valid rewards; 0 for a zero-variance group
  float mean;
  bool zero_variance;  // < 2 valid rewards, or all equal
};

struct AdvantagesArgs {
  const void* rewards;  // [P, n], element (p, i) at p * stride0 + i * stride1
  bool rewards_fp64;  // else fp32
  int64_t groups;  // P
  int64_t n;
  int64_t stride0;
  int64_t stride1;
  AdvantageMode mode;
  double eps;
  float* advantages;  // [P, n] contiguous
  bool* zero_variance;  // [P]
  GroupStats* stats;  // [P] scratch
  float* batch_scale;  // [1] scratch: mean_batch_std's 1 / (batch_std + eps)
};

// One block per group for the statistics and the write; mean_batch_std adds a one-block reduction of the groups'
// sums of squares in a fixed order (deterministic) between the two.
void launch_group_advantages(const AdvantagesArgs& args, cudaStream_t stream);

}  // namespace tao_engine::cuda
