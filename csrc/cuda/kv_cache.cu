// CUDA write_kv_cache: device code and launcher only (checks and the TORCH_LIBRARY_IMPL glue are in
// kv_cache_host.cpp). One block per (token row, k or v); its threads copy the row in the widest unit (16, 8, 4, 2 or
// 1 bytes) that divides the row size, both strides and both base addresses, so a typical bf16 row of Hkv * D = 192
// values moves as 24 16-byte stores.

#include <c10/macros/Macros.h>  // CUDA_KERNEL_ASSERT_MSG
#include <cuda_runtime.h>

#include <cstdint>

#include "kv_cache_launch.h"

namespace tao_engine::cuda {
namespace {

constexpr int kThreads = 128;

template <typename Unit>
__global__ void __launch_bounds__(kThreads) write_kv_cache_kernel(KvWriteArgs args) {
  const int64_t i = blockIdx.x;
  const int64_t slot = args.slots[i];
  if (slot < 0) {
    return;  // a skipped token (padding): its slot is left as it is
  }
  CUDA_KERNEL_ASSERT_MSG(slot < args.num_slots, "tao_engine::write_kv_cache: slot_mapping value out of range");
  const bool is_v = blockIdx.y == 1;
  const char* src = static_cast<const char*>(is_v ? args.v : args.k) + i * (is_v ? args.v_row_stride : args.k_row_stride);
  char* dst = static_cast<char*>(is_v ? args.v_cache : args.k_cache) + slot * args.row_bytes;
  const int64_t units = args.row_bytes / static_cast<int64_t>(sizeof(Unit));
  const Unit* from = reinterpret_cast<const Unit*>(src);
  Unit* to = reinterpret_cast<Unit*>(dst);
  for (int64_t u = threadIdx.x; u < units; u += blockDim.x) {
    to[u] = from[u];
  }
}

// The widest power-of-two unit dividing every byte offset the copy uses.
int copy_unit(const KvWriteArgs& args) {
  const auto common = static_cast<uint64_t>(args.row_bytes) | static_cast<uint64_t>(args.k_row_stride) |
                      static_cast<uint64_t>(args.v_row_stride) | reinterpret_cast<uintptr_t>(args.k) |
                      reinterpret_cast<uintptr_t>(args.v) | reinterpret_cast<uintptr_t>(args.k_cache) |
                      reinterpret_cast<uintptr_t>(args.v_cache);
  for (int unit = 16; unit > 1; unit /= 2) {
    if (common % static_cast<uint64_t>(unit) == 0) {
      return unit;
    }
  }
  return 1;
}

}  // namespace

void launch_write_kv_cache(const KvWriteArgs& args, cudaStream_t stream) {
  if (args.num_tokens == 0 || args.row_bytes == 0) {
    return;
  }
  const dim3 grid(static_cast<unsigned int>(args.num_tokens), 2);
  switch (copy_unit(args)) {
    case 16:
      return write_kv_cache_kernel<uint4><<<grid, kThreads, 0, stream>>>(args);
    case 8:
      return write_kv_cache_kernel<uint2><<<grid, kThreads, 0, stream>>>(args);
    case 4:
      return write_kv_cache_kernel<uint32_t><<<grid, kThreads, 0, stream>>>(args);
    case 2:
      return write_kv_cache_kernel<uint16_t><<<grid, kThreads, 0, stream>>>(args);
    default:
      return write_kv_cache_kernel<uint8_t><<<grid, kThreads, 0, stream>>>(args);
  }
}

}  // namespace tao_engine::cuda
