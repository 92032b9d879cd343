// CUDA paged_decode_attention: device code and launcher only (checks and glue in paged_attention_host.cpp).
//
// One block per (sequence b, query head h) reading kv head h / (Hq / Hkv). Each of the block's warps takes every
// kWarps-th token of the context: its lanes hold D / 32 of the query's dimensions, the dot product is a warp
// shuffle reduction, and the warp keeps a running (max, sum of exp, weighted sum of V) so each K and V row is read
// once per query head (the query heads sharing a kv head read the same rows, mostly from L2). The warps' states are
// merged through shared memory at the end. Block table entries and context lengths are asserted on the device.

#include <c10/macros/Macros.h>  // CUDA_KERNEL_ASSERT_MSG
#include <cuda_runtime.h>

#include <cstdint>

#include "float_convert.cuh"
#include "paged_attention_launch.h"

namespace tao_engine::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kPerLane = static_cast<int>(kMaxHeadDim / 32);  // dimensions per lane, D <= 256

__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) paged_decode_kernel(PagedDecodeArgs args) {
  const int64_t b = blockIdx.x;
  const int64_t h = blockIdx.y;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int64_t d = args.head_dim;
  const int64_t kv_head = h / (args.q_heads / args.kv_heads);
  const int64_t context = args.context_lens[b];
  CUDA_KERNEL_ASSERT_MSG(context >= 0 && context <= args.max_blocks * args.block_size,
                         "tao_engine::paged_decode_attention: context_lens value does not fit block_tables");

  const T* q = static_cast<const T*>(args.q) + (b * args.q_heads + h) * d;
  float q_reg[kPerLane];
  float acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t dim = lane + 32 * i;
    q_reg[i] = dim < d ? load_float(q[dim]) * args.scale : 0.0f;
    acc[i] = 0.0f;
  }
  float running_max = -INFINITY;
  float running_sum = 0.0f;
  const T* k_cache = static_cast<const T*>(args.k_cache);
  const T* v_cache = static_cast<const T*>(args.v_cache);
  const int64_t* table = args.block_tables + b * args.max_blocks;
  const int64_t row_stride = args.kv_heads * d;  // elements between consecutive token rows of one block

  for (int64_t t = warp; t < context; t += kWarps) {
    const int64_t block = table[t / args.block_size];
    CUDA_KERNEL_ASSERT_MSG(block >= 0 && block < args.num_blocks,
                           "tao_engine::paged_decode_attention: block_tables entry out of range [0, num_blocks)");
    const int64_t row = (block * args.block_size + t % args.block_size) * row_stride + kv_head * d;
    float partial = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t dim = lane + 32 * i;
      if (dim < d) {
        partial += q_reg[i] * load_float(k_cache[row + dim]);
      }
    }
    const float score = warp_sum(partial);
    const float new_max = fmaxf(running_max, score);
    const float correction = __expf(running_max - new_max);  // 0 on the first token (running_max = -inf)
    const float weight = __expf(score - new_max);
    running_sum = running_sum * correction + weight;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t dim = lane + 32 * i;
      if (dim < d) {
        acc[i] = acc[i] * correction + weight * load_float(v_cache[row + dim]);
      }
    }
    running_max = new_max;
  }

  // Merge the warps' (max, sum, acc) states: [kWarps] maxima and sums, [kWarps, D] accumulators.
  __shared__ float warp_max[kWarps];
  __shared__ float warp_sum_exp[kWarps];
  __shared__ float warp_acc[kWarps][kMaxHeadDim];
  if (lane == 0) {
    warp_max[warp] = running_max;
    warp_sum_exp[warp] = running_sum;
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t dim = lane + 32 * i;
    if (dim < d) {
      warp_acc[warp][dim] = acc[i];
    }
  }
  __syncthreads();
  float max = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    max = fmaxf(max, warp_max[w]);
  }
  float denominator = 0.0f;
  float weights[kWarps];
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    // A warp that saw no token keeps max -inf and contributes nothing (and max -inf means an empty context).
    weights[w] = warp_max[w] == -INFINITY ? 0.0f : __expf(warp_max[w] - max);
    denominator += weights[w] * warp_sum_exp[w];
  }
  const float inv = denominator > 0.0f ? 1.0f / denominator : 0.0f;
  float* out = args.out + (b * args.q_heads + h) * d;
  for (int64_t dim = threadIdx.x; dim < d; dim += kThreads) {
    float value = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      value += weights[w] * warp_acc[w][dim];
    }
    out[dim] = value * inv;
  }
}

template <typename T>
void launch(const PagedDecodeArgs& args, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(args.batch), static_cast<unsigned int>(args.q_heads));
  paged_decode_kernel<T><<<grid, kThreads, 0, stream>>>(args);
}

}  // namespace

void launch_paged_decode_attention(const PagedDecodeArgs& args, cudaStream_t stream) {
  if (args.batch == 0 || args.q_heads == 0) {
    return;
  }
  with_float_kind(args.dtype, [&](auto tag) { launch<decltype(tag)>(args, stream); });
}

}  // namespace tao_engine::cuda
