// Launcher of the write_kv_cache CUDA kernel (csrc/cuda/kv_cache.cu), called by csrc/cuda/kv_cache_host.cpp after it
// has checked the arguments and converted k/v to the cache dtype.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tao_engine::cuda {

struct KvWriteArgs {
  const void* k;  // token row i starts at k + i * k_row_stride bytes; its row_bytes are contiguous
  const void* v;
  int64_t k_row_stride;  // bytes
  int64_t v_row_stride;  // bytes
  void* k_cache;  // [num_slots, row_bytes] contiguous
  void* v_cache;
  const int64_t* slots;  // [N]; negative = skip, else < num_slots (asserted on the device)
  int64_t num_tokens;  // N
  int64_t num_slots;
  int64_t row_bytes;  // Hkv * D * element size of the cache
};

// Copies k/v row i to slot slots[i] of each cache; one block per token row, k and v on blockIdx.y.
void launch_write_kv_cache(const KvWriteArgs& args, cudaStream_t stream);

}  // namespace tao_engine::cuda
