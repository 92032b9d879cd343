// Launcher of the sample CUDA kernel (csrc/cuda/sampling.cu), called by csrc/cuda/sampling_host.cpp after it has
// checked the arguments and allocated the outputs. The semantics are tao_engine/ops/sampling.py's reference.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../token_logprobs_rows.h"

namespace tao_engine::cuda {

struct SampleArgs {
  const void* logits;  // row b starts at logits + b * row_stride elements; its `vocab` values are contiguous
  int64_t row_stride;
  int64_t num_rows;  // B
  int64_t vocab;  // V
  FloatKind dtype;
  const float* temperature;  // [B] each; <= 0 = greedy
  const int64_t* top_k;  // 0 / -1 / >= V = off
  const float* top_p;  // 1 = off
  const float* min_p;  // 0 = off
  const int64_t* seeds;
  const int64_t* steps;
  int64_t* tokens;  // [B] outputs
  float* logprobs;
  float* raw_logprobs;
};

// One block per row: cutoffs by value (top-k and top-p by radix selection over the float keys), a splitmix64 uniform
// from (seed, step), and the CDF inversion in vocabulary order with an fp64 block-wide prefix sum.
void launch_sample(const SampleArgs& args, cudaStream_t stream);

}  // namespace tao_engine::cuda
