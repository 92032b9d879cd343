// Row kernels of sample (tao_engine/ops/sampling.py is the specification), compiled once per CPU capability as the
// token_logprobs kernels are: the same source (sampling_kernels_impl.h) is built for the baseline ISA (namespace
// DEFAULT) and, on x86-64 with GCC, for AVX2 + FMA + F16C (namespace AVX2); csrc/cpu/sampling.cpp picks one at run
// time. The entry points take raw pointers only, so the per-ISA translation units include as little as possible.
#pragma once

#include <cstdint>

#include "../token_logprobs_rows.h"
#include "token_logprobs_kernels.h"  // TAO_CPU_AVX2_KERNELS and the raw log-prob row kernels

namespace tao_engine::cpu {

// One sample call as raw pointers. Every per-row array is [num_rows] and contiguous.
struct SamplingRows {
  const void* logits;  // row i starts at logits + i * row_stride elements; its `vocab` values are contiguous
  int64_t row_stride;
  int64_t vocab;  // V, 1 <= V < 2**31 (token ids are stored as int32 inside the kernels)
  FloatKind dtype;
  const float* temperature;  // <= 0: greedy row
  const int64_t* top_k;  // 0 < k < V: on
  const float* top_p;  // < 1: on
  const float* min_p;  // > 0: on
  const int64_t* seeds;
  const int64_t* steps;
  // The same logits at temperature 1 with targets = the `tokens` output, for the token_logprobs row kernel: the
  // raw log-probs of rows whose sampling did not already sum exp over the whole row at T = 1.
  TokenLogprobsRows raw;
};

struct SampleOutputs {
  int64_t* tokens;  // [num_rows]
  float* logprobs;  // [num_rows], under the filtered, renormalized distribution
  float* raw_logprobs;  // [num_rows], log_softmax(logits)[token]
};

// For rows [begin, end): the outputs of those rows.
using SampleRowsKernel = void(const SamplingRows& rows, const SampleOutputs& out, int64_t begin, int64_t end);

TAO_CPU_KERNELS(
    SampleRowsKernel sample_rows;
)

// splitmix64's finalizer: the reference's `_mix64`, in the uint64 arithmetic it emulates on int64 tensors.
inline uint64_t splitmix64_mix(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// The row's uniform in (0, 1), bit for bit `sampling_uniforms` of the reference: 52 random bits x -> (2x + 1) / 2**53.
inline double sampling_uniform(int64_t seed, int64_t step) {
  constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
  const uint64_t key =
      splitmix64_mix(splitmix64_mix(static_cast<uint64_t>(seed)) + (static_cast<uint64_t>(step) + 1) * kGolden);
  return static_cast<double>((key >> 12) * 2 + 1) * 0x1p-53;
}

}  // namespace tao_engine::cpu
