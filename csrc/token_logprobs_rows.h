// The rows of one token_logprobs call as raw pointers: what host code (checks, allocation; csrc/token_logprobs.h)
// hands to the kernels (csrc/cpu/token_logprobs_kernels.h, csrc/cuda/token_logprobs_launch.h). It includes nothing
// from torch, so the per-ISA CPU and the CUDA device translation units stay light.
#pragma once

#include <cstdint>

#include "float_kind.h"

namespace tao_engine {

struct TokenLogprobsRows {
  const void* logits;  // row i starts at logits + i * row_stride elements; its `vocab` values are contiguous
  int64_t row_stride;
  int64_t num_rows;  // N
  int64_t vocab;  // V
  FloatKind dtype;
  const int64_t* targets;  // [N], contiguous, each in [0, V) (checked on CPU; asserted on the GPU)
  float inv_temperature;  // 1 / T
};

}  // namespace tao_engine
