// CUDA group_advantages: device code and launchers only (checks and glue in advantages_host.cpp). The modes are
// specified by tao_engine/ops/advantages.py; the arithmetic follows csrc/cpu/advantages.cpp (fp64 sums, the mean
// rounded to fp32, centered values r - mean in fp32, per-group scale computed in fp64 then rounded to fp32).
//
// Groups are small (n of 4 to a few hundred), so a block of kThreads per group is plenty; sums use cub's block
// reduction, whose order is fixed for a given n, so results are deterministic run to run.

#include <cub/block/block_reduce.cuh>
#include <cuda_runtime.h>

#include <cstdint>

#include "advantages_launch.h"

namespace tao_engine::cuda {
namespace {

constexpr int kThreads = 128;
using DoubleReduce = cub::BlockReduce<double, kThreads>;
using FloatReduce = cub::BlockReduce<float, kThreads>;
using LongReduce = cub::BlockReduce<int64_t, kThreads>;

__device__ __forceinline__ float reward(const AdvantagesArgs& args, int64_t p, int64_t i) {
  const int64_t offset = p * args.stride0 + i * args.stride1;
  return args.rewards_fp64 ? static_cast<float>(static_cast<const double*>(args.rewards)[offset])
                           : static_cast<const float*>(args.rewards)[offset];
}

__device__ float group_scale(const AdvantagesArgs& args, const GroupStats& s) {
  const double denominator = static_cast<double>(s.count - 1 > 1 ? s.count - 1 : 1);
  switch (args.mode) {
    case AdvantageMode::kMeanStd:
      return static_cast<float>(1.0 / (sqrt(s.sum_sq / denominator) + args.eps));
    case AdvantageMode::kLeaveOneOut:
      return static_cast<float>(static_cast<double>(s.count) / denominator);
    default:
      return 1.0f;
  }
}

__device__ void write_group(const AdvantagesArgs& args, int64_t p, const GroupStats& s, float scale) {
  const bool raw = args.mode == AdvantageMode::kNone;
  for (int64_t i = threadIdx.x; i < args.n; i += blockDim.x) {
    const float r = reward(args, p, i);
    float a;
    if (isnan(r)) {
      a = 0.0f;
    } else if (raw) {
      a = r;
    } else {
      a = s.zero_variance ? 0.0f : (r - s.mean) * scale;
    }
    args.advantages[p * args.n + i] = a;
  }
}

// Statistics of group blockIdx.x; writes its advantages too unless the mode needs the batch's statistics.
__global__ void __launch_bounds__(kThreads) group_stats_kernel(AdvantagesArgs args) {
  __shared__ union {
    typename DoubleReduce::TempStorage d;
    typename FloatReduce::TempStorage f;
    typename LongReduce::TempStorage l;
  } scratch;
  __shared__ GroupStats shared_stats;
  const int64_t p = blockIdx.x;
  int64_t count = 0;
  double sum = 0.0;  // fp64: the mean is then the fp32 rounding of the exact mean of the fp32 rewards
  float lowest = INFINITY;
  float highest = -INFINITY;
  for (int64_t i = threadIdx.x; i < args.n; i += blockDim.x) {
    const float r = reward(args, p, i);
    if (!isnan(r)) {
      ++count;
      sum += r;
      lowest = fminf(lowest, r);
      highest = fmaxf(highest, r);
    }
  }
  const int64_t total_count = LongReduce(scratch.l).Sum(count);
  __syncthreads();
  const double total_sum = DoubleReduce(scratch.d).Sum(sum);
  __syncthreads();
  const float min_all = FloatReduce(scratch.f).Reduce(lowest, [](float a, float b) { return fminf(a, b); });
  __syncthreads();
  const float max_all = FloatReduce(scratch.f).Reduce(highest, [](float a, float b) { return fmaxf(a, b); });
  if (threadIdx.x == 0) {
    shared_stats.count = total_count;
    shared_stats.mean = total_count > 0 ? static_cast<float>(total_sum / static_cast<double>(total_count)) : 0.0f;
    shared_stats.zero_variance = total_count < 2 || min_all == max_all;
  }
  __syncthreads();
  const float mean = shared_stats.mean;
  double sum_sq = 0.0;
  if (!shared_stats.zero_variance) {
    for (int64_t i = threadIdx.x; i < args.n; i += blockDim.x) {
      const float r = reward(args, p, i);
      if (!isnan(r)) {
        const double c = static_cast<double>(r - mean);
        sum_sq += c * c;
      }
    }
  }
  const double total_sq = DoubleReduce(scratch.d).Sum(sum_sq);
  if (threadIdx.x == 0) {
    shared_stats.sum_sq = total_sq;
    args.stats[p] = shared_stats;
    args.zero_variance[p] = shared_stats.zero_variance;
  }
  __syncthreads();
  if (args.mode != AdvantageMode::kMeanBatchStd) {
    const GroupStats s = shared_stats;
    write_group(args, p, s, group_scale(args, s));
  }
}

// mean_batch_std: 1 / (batch_std + eps) from every group's statistics, in one block (fixed order); then the write.
__global__ void __launch_bounds__(kThreads) batch_scale_kernel(AdvantagesArgs args, float* scale) {
  __shared__ union {
    typename DoubleReduce::TempStorage d;
    typename LongReduce::TempStorage l;
  } scratch;
  double sum_sq = 0.0;
  int64_t valid = 0;
  for (int64_t p = threadIdx.x; p < args.groups; p += blockDim.x) {
    sum_sq += args.stats[p].sum_sq;
    valid += args.stats[p].count;
  }
  const double total_sq = DoubleReduce(scratch.d).Sum(sum_sq);
  __syncthreads();
  const int64_t total_valid = LongReduce(scratch.l).Sum(valid);
  if (threadIdx.x == 0) {
    const double batch_std = sqrt(total_sq / static_cast<double>(total_valid - 1 > 1 ? total_valid - 1 : 1));
    *scale = static_cast<float>(1.0 / (batch_std + args.eps));
  }
}

__global__ void __launch_bounds__(kThreads) batch_write_kernel(AdvantagesArgs args, const float* scale) {
  const int64_t p = blockIdx.x;
  const GroupStats s = args.stats[p];
  write_group(args, p, s, *scale);
}

}  // namespace

void launch_group_advantages(const AdvantagesArgs& args, cudaStream_t stream) {
  if (args.groups == 0) {
    return;
  }
  const auto grid = static_cast<unsigned int>(args.groups);
  group_stats_kernel<<<grid, kThreads, 0, stream>>>(args);
  if (args.mode == AdvantageMode::kMeanBatchStd) {
    batch_scale_kernel<<<1, kThreads, 0, stream>>>(args, args.batch_scale);
    batch_write_kernel<<<grid, kThreads, 0, stream>>>(args, args.batch_scale);
  }
}

}  // namespace tao_engine::cuda
