// CUDA kernels of token_logprobs (log_softmax(logits / T)[target] in fp32) and its backward: device code and
// launchers only; checks, allocation and the TORCH_LIBRARY_IMPL glue are in token_logprobs_host.cpp.
//
// One block per row. Each thread keeps a running (max, sum of exp(x - max)) over the values it reads (one exp per
// value: the sum is rescaled only when a new max appears), reading the row in 16-byte packs; the block then merges
// the threads' pairs with warp shuffles and one shared-memory round. Rows are read once and nothing of size [N, V]
// is allocated.

#include <c10/macros/Macros.h>  // CUDA_KERNEL_ASSERT_MSG
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "float_convert.cuh"
#include "token_logprobs_launch.h"

namespace tao_engine::cuda {
namespace {

constexpr int kThreads = 256;  // per block (= per row)
constexpr int kWarps = kThreads / 32;

// Max of the values seen and the sum of exp(value - max). Merging two is associative, so any reduction order works.
struct MaxSum {
  float max;
  float sum;
};

__device__ __forceinline__ void push(MaxSum& state, float x) {
  if (x > state.max) {
    state.sum = state.sum * __expf(state.max - x) + 1.0f;
    state.max = x;
  } else if (x != -INFINITY) {
    // -inf adds 0, and with max still -inf would give exp(-inf - -inf) = NaN. A NaN x lands here and poisons the
    // sum, so the row's result is NaN as in the reference.
    state.sum += __expf(x - state.max);
  }
}

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) {
    return {m, a.sum + b.sum};  // nothing finite seen: sums are 0, or NaN that must survive
  }
  return {m, a.sum * __expf(a.max - m) + b.sum * __expf(b.max - m)};
}

// The merged (max, sum) of every thread's state, returned to all threads of the block.
__device__ MaxSum block_reduce(MaxSum state) {
  __shared__ MaxSum warp_states[kWarps];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) {
    const MaxSum other{
        __shfl_xor_sync(0xffffffffu, state.max, offset), __shfl_xor_sync(0xffffffffu, state.sum, offset)};
    state = merge(state, other);
  }
  if (lane == 0) {
    warp_states[warp] = state;
  }
  __syncthreads();
  state = lane < kWarps ? warp_states[lane] : MaxSum{-INFINITY, 0.0f};
  for (int offset = 16; offset > 0; offset /= 2) {
    const MaxSum other{
        __shfl_xor_sync(0xffffffffu, state.max, offset), __shfl_xor_sync(0xffffffffu, state.sum, offset)};
    state = merge(state, other);
  }
  // Every warp reduced the same kWarps values in the same order, so all threads now hold the same result.
  if (state.max == INFINITY) {
    state.sum = NAN;  // an +inf logit: the reference's exp(inf - inf) is NaN
  }
  return state;
}

// (max, sum of exp) of row * inv_t. The row is read in 16-byte packs once its address is 16-byte aligned: a scalar
// head up to the first boundary, the packs, then a scalar tail.
template <typename T>
__device__ MaxSum row_stats(const T* __restrict__ row, int64_t vocab, float inv_t) {
  constexpr int64_t kPack = 16 / sizeof(T);
  MaxSum state{-INFINITY, 0.0f};
  const int64_t misaligned = static_cast<int64_t>(reinterpret_cast<uintptr_t>(row) % 16) / sizeof(T);
  const int64_t head = misaligned == 0 ? 0 : min(kPack - misaligned, vocab);
  for (int64_t j = threadIdx.x; j < head; j += blockDim.x) {
    push(state, load_float(row[j]) * inv_t);
  }
  const int64_t packs = (vocab - head) / kPack;
  const uint4* packed = reinterpret_cast<const uint4*>(row + head);
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const uint4 bits = packed[p];
    T values[kPack];
    memcpy(values, &bits, sizeof(bits));
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      push(state, load_float(values[k]) * inv_t);
    }
  }
  for (int64_t j = head + packs * kPack + threadIdx.x; j < vocab; j += blockDim.x) {
    push(state, load_float(row[j]) * inv_t);
  }
  return block_reduce(state);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) token_logprobs_kernel(
    const T* __restrict__ logits, int64_t row_stride, int64_t vocab, const int64_t* __restrict__ targets, float inv_t,
    float* __restrict__ out) {
  const int64_t i = blockIdx.x;
  const T* row = logits + i * row_stride;
  const MaxSum stats = row_stats(row, vocab, inv_t);
  if (threadIdx.x == 0) {
    const int64_t target = targets[i];
    CUDA_KERNEL_ASSERT_MSG(target >= 0 && target < vocab, "tao_engine::token_logprobs: target out of range [0, V)");
    const float logp = (load_float(row[target]) * inv_t - stats.max) - logf(stats.sum);
    // Mathematically <= 0; rounding (and a fused multiply-add in the line above) can land a hair above, and a
    // log-prob > 0 would be a probability > 1. NaN passes through.
    out[i] = logp > 0.0f ? 0.0f : logp;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) token_logprobs_backward_kernel(
    const float* __restrict__ grad_out, const T* __restrict__ logits, int64_t row_stride, int64_t vocab,
    const int64_t* __restrict__ targets, float inv_t, T* __restrict__ grad_logits) {
  const int64_t i = blockIdx.x;
  const T* row = logits + i * row_stride;
  const MaxSum stats = row_stats(row, vocab, inv_t);
  const float lse = stats.max + logf(stats.sum);
  const int64_t target = targets[i];
  CUDA_KERNEL_ASSERT_MSG(
      target >= 0 && target < vocab, "tao_engine::token_logprobs_backward: target out of range [0, V)");
  const float scale = grad_out[i] * inv_t;
  T* out_row = grad_logits + i * vocab;
  // Element-wise and coalesced: the row was just read, so this second read is mostly served from L2.
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = __expf(load_float(row[j]) * inv_t - lse);
    out_row[j] = store_float<T>(j == target ? scale - scale * p : -scale * p);
  }
}

template <typename T>
void launch_forward(const TokenLogprobsRows& rows, float* out, cudaStream_t stream) {
  token_logprobs_kernel<T><<<static_cast<unsigned int>(rows.num_rows), kThreads, 0, stream>>>(
      static_cast<const T*>(rows.logits), rows.row_stride, rows.vocab, rows.targets, rows.inv_temperature, out);
}

template <typename T>
void launch_backward(const TokenLogprobsRows& rows, const float* grad_out, void* grad_logits, cudaStream_t stream) {
  token_logprobs_backward_kernel<T><<<static_cast<unsigned int>(rows.num_rows), kThreads, 0, stream>>>(
      grad_out, static_cast<const T*>(rows.logits), rows.row_stride, rows.vocab, rows.targets, rows.inv_temperature,
      static_cast<T*>(grad_logits));
}

}  // namespace

void launch_token_logprobs(const TokenLogprobsRows& rows, float* out, cudaStream_t stream) {
  if (rows.num_rows == 0) {
    return;
  }
  with_float_kind(rows.dtype, [&](auto tag) { launch_forward<decltype(tag)>(rows, out, stream); });
}

void launch_token_logprobs_backward(
    const TokenLogprobsRows& rows, const float* grad_out, void* grad_logits, cudaStream_t stream) {
  if (rows.num_rows == 0) {
    return;
  }
  with_float_kind(rows.dtype, [&](auto tag) { launch_backward<decltype(tag)>(rows, grad_out, grad_logits, stream); });
}

}  // namespace tao_engine::cuda
