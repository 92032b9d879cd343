// Launcher of the paged_decode_attention CUDA kernel (csrc/cuda/paged_attention.cu), called by
// csrc/cuda/paged_attention_host.cpp after it has checked the arguments and converted q to the cache dtype.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../float_kind.h"

namespace tao_engine::cuda {

struct PagedDecodeArgs {
  const void* q;  // [B, Hq, D] contiguous, in the cache dtype
  const void* k_cache;  // [num_blocks, block_size, Hkv, D] contiguous
  const void* v_cache;
  const int64_t* block_tables;  // [B, max_blocks] contiguous
  const int64_t* context_lens;  // [B]
  float* out;  // [B, Hq, D] fp32
  int64_t batch;
  int64_t q_heads;  // Hq
  int64_t kv_heads;  // Hkv
  int64_t head_dim;  // D <= kMaxHeadDim
  int64_t block_size;
  int64_t max_blocks;
  int64_t num_blocks;
  float scale;
  FloatKind dtype;
};

constexpr int64_t kMaxHeadDim = 256;

// One block per (sequence, query head): its warps split the context's tokens, each keeps an online softmax, and the
// block merges them. An empty context gives zeros.
void launch_paged_decode_attention(const PagedDecodeArgs& args, cudaStream_t stream);

}  // namespace tao_engine::cuda
