// CUDA sample: device code and launcher only (checks and glue in sampling_host.cpp). tao_engine/ops/sampling.py is
// the specification; every step below names the reference function it reproduces.
//
// One block per row, kThreads threads. The row (fp32 after conversion, scaled = logits / T) is read several times,
// mostly from L2:
//   1. max, argmax (lowest id on ties) and sum of exp(logits - max): greedy token, row_max, raw log-prob;
//   2. top-k: the k-th largest scaled value by an 8-bit radix select over order-preserving uint32 keys (4 passes of
//      a shared-memory histogram of counts);
//   3. top-p: the fp64 mass of the top-k-kept tokens, then the smallest kept value (a value is kept when the mass
//      of the values strictly above it is < top_p * mass) by the same radix descent over histograms of mass;
//   4. the draw: weights exp(scaled - row_max) of the tokens >= cutoff, an fp64 inclusive prefix sum over the row
//      in vocabulary order (tiles of kThreads x kItems, cub::BlockScan per tile, a running carry), and the first
//      position whose cumulative mass exceeds u * total.
// exp is expf (full precision) so that the weights match torch's up to its last-ulp rounding.

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "float_convert.cuh"
#include "sampling_launch.h"

namespace tao_engine::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kItems = 4;  // consecutive elements per thread in a draw tile
constexpr int kBins = 256;

// splitmix64's finalizer, as sampling.py's _mix64 (uint64 arithmetic wraps as the int64 tensor ops do).
__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// sampling_uniforms: (2 * (key >> 12) + 1) / 2^53, in (0, 1), exact in fp64.
__device__ __forceinline__ double row_uniform(int64_t seed, int64_t step) {
  const uint64_t key =
      mix64(mix64(static_cast<uint64_t>(seed)) + (static_cast<uint64_t>(step) + 1ull) * 0x9E3779B97F4A7C15ull);
  return static_cast<double>((key >> 12) * 2ull + 1ull) * 0x1p-53;
}

// Order-preserving map of floats to uint32: a larger float gives a larger key.
__device__ __forceinline__ uint32_t float_key(float value) {
  const uint32_t bits = __float_as_uint(value);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

__device__ __forceinline__ float key_float(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
}

template <typename T>
struct Row {
  const T* values;
  int64_t vocab;
  float temperature;  // > 0 (greedy rows stop before any use of the scaled values)

  __device__ __forceinline__ float raw(int64_t j) const { return load_float(values[j]); }
  // logits / T in fp32, rounded as torch's division (the reference divides only when some T != 1; x / 1 == x).
  __device__ __forceinline__ float scaled(int64_t j) const { return __fdiv_rn(raw(j), temperature); }
};

struct MaxArg {
  float max;
  int64_t index;
};

struct MaxArgOp {
  __device__ __forceinline__ MaxArg operator()(const MaxArg& a, const MaxArg& b) const {
    if (a.max > b.max || (a.max == b.max && a.index < b.index)) {
      return a;
    }
    return b;
  }
};

using MaxArgReduce = cub::BlockReduce<MaxArg, kThreads>;
using FloatReduce = cub::BlockReduce<float, kThreads>;
using DoubleReduce = cub::BlockReduce<double, kThreads>;
using DoubleScan = cub::BlockScan<double, kThreads>;

union SharedScratch {
  typename MaxArgReduce::TempStorage max_arg;
  typename FloatReduce::TempStorage float_sum;
  typename DoubleReduce::TempStorage double_sum;
  typename DoubleScan::TempStorage scan;
};

struct Histogram {
  int count[kBins];
  double mass[kBins];
};

// The fp64 mass sum exp(scaled - row_max) of the row's values at or above `threshold`, summed over the block (thread 0
// holds the total).
template <typename T>
__device__ __forceinline__ double kept_mass(const Row<T>& row, float threshold, float row_max,
                                            typename DoubleReduce::TempStorage& storage) {
  double mass = 0.0;
  for (int64_t j = threadIdx.x; j < row.vocab; j += blockDim.x) {
    const float value = row.scaled(j);
    if (value >= threshold) {
      mass += static_cast<double>(expf(value - row_max));
    }
  }
  return DoubleReduce(storage).Sum(mass);
}

// The key of the k-th largest scaled value (1 <= k <= V): _cutoffs' `kth`.
template <typename T>
__device__ uint32_t kth_largest_key(const Row<T>& row, int64_t k, Histogram& hist) {
  __shared__ uint32_t chosen_digit;
  __shared__ int64_t chosen_remaining;
  uint32_t prefix = 0;
  uint32_t mask = 0;
  int64_t remaining = k;  // rank of the wanted key among the keys matching `prefix`, 1-based from the top
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < kBins; d += blockDim.x) {
      hist.count[d] = 0;
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < row.vocab; j += blockDim.x) {
      const uint32_t key = float_key(row.scaled(j));
      if ((key & mask) == prefix) {
        atomicAdd(&hist.count[(key >> shift) & 0xFFu], 1);
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t left = remaining;
      uint32_t digit = 0;
      for (int d = kBins - 1; d >= 0; --d) {
        if (hist.count[d] >= left) {
          digit = static_cast<uint32_t>(d);
          break;
        }
        left -= hist.count[d];
      }
      chosen_digit = digit;
      chosen_remaining = left;
    }
    __syncthreads();
    prefix |= chosen_digit << shift;
    mask |= 0xFFu << shift;
    remaining = chosen_remaining;
    __syncthreads();
  }
  return prefix;
}

// The smallest top-k-kept scaled value whose strictly-greater kept mass is < budget: _top_p_cutoff's last kept
// value (the prefix "mass strictly before < top_p" in descending order ends with that value's ties).
template <typename T>
__device__ float top_p_cutoff(const Row<T>& row, float kth, float row_max, double budget, Histogram& hist) {
  __shared__ uint32_t chosen_digit;
  __shared__ double chosen_above;
  uint32_t prefix = 0;
  uint32_t mask = 0;
  double above = 0.0;  // kept mass of the keys greater than every key matching `prefix`
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < kBins; d += blockDim.x) {
      hist.count[d] = 0;
      hist.mass[d] = 0.0;
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < row.vocab; j += blockDim.x) {
      const float value = row.scaled(j);
      const uint32_t key = float_key(value);
      if (value >= kth && (key & mask) == prefix) {
        const uint32_t d = (key >> shift) & 0xFFu;
        atomicAdd(&hist.count[d], 1);
        atomicAdd(&hist.mass[d], static_cast<double>(expf(value - row_max)));
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double acc = above;
      int digit = -1;
      double digit_above = above;
      for (int d = kBins - 1; d >= 0; --d) {
        if (hist.count[d] == 0) {
          continue;
        }
        if (digit >= 0 && !(acc < budget)) {
          break;  // this value and all below it have mass >= budget before them: dropped
        }
        digit = d;  // the first non-empty bin is always taken: the top token is always kept
        digit_above = acc;
        acc += hist.mass[d];
      }
      chosen_digit = static_cast<uint32_t>(digit < 0 ? 0 : digit);
      chosen_above = digit_above;
    }
    __syncthreads();
    prefix |= chosen_digit << shift;
    mask |= 0xFFu << shift;
    above = chosen_above;
    __syncthreads();
  }
  return key_float(prefix);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) sample_kernel(SampleArgs args) {
  __shared__ SharedScratch scratch;
  __shared__ Histogram hist;
  __shared__ MaxArg top;
  __shared__ float shared_float;
  __shared__ double shared_double;
  __shared__ int64_t found;

  const int64_t b = blockIdx.x;
  const T* values = static_cast<const T*>(args.logits) + b * args.row_stride;
  const int64_t vocab = args.vocab;
  const float temperature = args.temperature[b];
  const bool greedy = temperature <= 0.0f;
  const Row<T> row{values, vocab, greedy ? 1.0f : temperature};

  // 1. argmax of the raw logits (greedy token, row max) and their log-sum-exp (raw log-prob).
  MaxArg local{-INFINITY, vocab};
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    local = MaxArgOp()(local, MaxArg{row.raw(j), j});
  }
  const MaxArg reduced = MaxArgReduce(scratch.max_arg).Reduce(local, MaxArgOp());
  if (threadIdx.x == 0) {
    top = reduced.index < vocab ? reduced : MaxArg{reduced.max, 0};
  }
  __syncthreads();
  const float raw_max = top.max;
  float raw_sum = 0.0f;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    raw_sum += expf(row.raw(j) - raw_max);
  }
  const float raw_total = FloatReduce(scratch.float_sum).Sum(raw_sum);
  if (threadIdx.x == 0) {
    shared_float = raw_total;
  }
  __syncthreads();
  const float raw_log_total = logf(shared_float);
  if (greedy) {
    // The reference draws greedy rows as top-k 1 and discards the draw: skip it. Uniform across the block.
    if (threadIdx.x == 0) {
      args.tokens[b] = top.index;
      args.logprobs[b] = 0.0f;
      const float raw_logprob = (row.raw(top.index) - raw_max) - raw_log_total;
      args.raw_logprobs[b] = raw_logprob > 0.0f ? 0.0f : raw_logprob;
    }
    return;
  }

  // sample_reference: row_max = max(logits) / T.
  const float row_max = __fdiv_rn(raw_max, row.temperature);
  const int64_t top_k = args.top_k[b];
  const float top_p = args.top_p[b];
  const bool use_k = top_k > 0 && top_k < vocab;
  const bool use_p = top_p < 1.0f;

  // 2. top-k cutoff.
  float kth = -INFINITY;
  if (use_k) {
    kth = key_float(kth_largest_key(row, top_k, hist));
  }
  // 3. top-p cutoff over the top-k-kept tokens.
  float cutoff = kth;
  if (use_p) {
    const double total_mass = kept_mass(row, kth, row_max, scratch.double_sum);
    if (threadIdx.x == 0) {
      shared_double = static_cast<double>(top_p) * total_mass;
    }
    __syncthreads();
    cutoff = top_p_cutoff(row, kth, row_max, shared_double, hist);
  }
  // min-p: scaled - row_max >= log(min_p), i.e. scaled >= row_max + log(min_p) (-inf when min_p is 0).
  cutoff = fmaxf(cutoff, row_max + logf(args.min_p[b]));

  // 4. total kept mass, then the CDF inversion in vocabulary order.
  const double total = kept_mass(row, cutoff, row_max, scratch.double_sum);
  if (threadIdx.x == 0) {
    // u * total may round up to total itself; stay strictly below so the search lands on a token with mass.
    shared_double = fmin(row_uniform(args.seeds[b], args.steps[b]) * total, nextafter(total, 0.0));
    found = vocab;
  }
  __syncthreads();
  const double target = shared_double;
  double carry = 0.0;  // mass of the tiles before this one
  constexpr int64_t kTile = static_cast<int64_t>(kThreads) * kItems;
  for (int64_t tile = 0; tile < vocab; tile += kTile) {
    const int64_t first = tile + static_cast<int64_t>(threadIdx.x) * kItems;
    double weights[kItems];
    double own = 0.0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int64_t j = first + i;
      float w = 0.0f;
      if (j < vocab) {
        const float value = row.scaled(j);
        w = value >= cutoff ? expf(value - row_max) : 0.0f;
      }
      weights[i] = static_cast<double>(w);
      own += weights[i];
    }
    double before = 0.0;
    double tile_total = 0.0;
    DoubleScan(scratch.scan).ExclusiveSum(own, before, tile_total);
    double running = carry + before;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      running += weights[i];
      if (running > target && first + i < vocab) {
        atomicMin(reinterpret_cast<unsigned long long*>(&found), static_cast<unsigned long long>(first + i));
        break;
      }
    }
    __syncthreads();
    if (found < vocab) {
      break;  // every thread reads the same value after the barrier
    }
    carry += tile_total;
    __syncthreads();  // the scan's storage is reused by the next tile
  }

  if (threadIdx.x == 0) {
    // searchsorted past the end (rounding) is clamped to the last position, as the reference does.
    const int64_t token = found < vocab ? found : vocab - 1;
    args.tokens[b] = token;
    args.logprobs[b] = (row.scaled(token) - row_max) - static_cast<float>(log(total));
    const float raw_logprob = (row.raw(token) - raw_max) - raw_log_total;
    args.raw_logprobs[b] = raw_logprob > 0.0f ? 0.0f : raw_logprob;
  }
}

template <typename T>
void launch(const SampleArgs& args, cudaStream_t stream) {
  sample_kernel<T><<<static_cast<unsigned int>(args.num_rows), kThreads, 0, stream>>>(args);
}

}  // namespace

void launch_sample(const SampleArgs& args, cudaStream_t stream) {
  if (args.num_rows == 0) {
    return;
  }
  with_float_kind(args.dtype, [&](auto tag) { launch<decltype(tag)>(args, stream); });
}

}  // namespace tao_engine::cuda
