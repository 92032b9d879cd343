// Host code shared by the CPU and CUDA implementations of write_kv_cache (csrc/cpu/kv_cache.cpp,
// csrc/cuda/kv_cache_host.cpp): the reference's checks and messages (ValueError), then what the copy needs beyond
// them, and k/v as the cache rows both copies read. Schema: csrc/ops.cpp; specification: tao_engine/ops/kv_cache.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace tao_engine {

constexpr const char* kWriteKvCacheOp = "write_kv_cache";

// check_device(t) runs on every tensor last, with the device's own message.
template <typename DeviceCheck>
void check_write_kv_cache_args(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_cache,
                               const at::Tensor& v_cache, const at::Tensor& slot_mapping, DeviceCheck&& check_device) {
  constexpr const char* kOp = kWriteKvCacheOp;
  TORCH_CHECK_VALUE(k_cache.dim() == 4 && k_cache.sizes() == v_cache.sizes(), kOp,
                    ": k_cache and v_cache must both be [num_blocks, block_size, Hkv, D], got ", k_cache.sizes(),
                    " and ", v_cache.sizes());
  TORCH_CHECK_VALUE(k_cache.is_contiguous() && v_cache.is_contiguous(), kOp,
                    ": k_cache and v_cache must be contiguous (allocate them with allocate_kv_caches)");
  TORCH_CHECK_VALUE(k.sizes() == v.sizes() && k.dim() == 3 && k.size(1) == k_cache.size(2) &&
                        k.size(2) == k_cache.size(3),
                    kOp, ": k and v must be [N, Hkv, D] = [N, ", k_cache.size(2), ", ", k_cache.size(3),
                    "] to match the cache, got ", k.sizes(), " and ", v.sizes());
  const int64_t n = k.size(0);
  TORCH_CHECK_VALUE(slot_mapping.dim() == 1 && slot_mapping.numel() == n && slot_mapping.scalar_type() == at::kLong,
                    kOp, ": slot_mapping must be int64 [N=", n, "], got ", slot_mapping.scalar_type(), " ",
                    slot_mapping.sizes());
  TORCH_CHECK(v_cache.scalar_type() == k_cache.scalar_type(), kOp,
              ": k_cache and v_cache must share one dtype, got ", k_cache.scalar_type(), " and ",
              v_cache.scalar_type());
  for (const at::Tensor* t : {&k, &v, &k_cache, &v_cache, &slot_mapping}) {
    check_device(*t);
  }
}

// k or v in the cache's dtype with each token row's Hkv * D values contiguous (a row-strided view is read in
// place: k and v often come straight out of a fused projection).
inline at::Tensor as_cache_rows(const at::Tensor& x, const at::Tensor& cache) {
  at::Tensor y = x.to(cache.scalar_type());
  const bool rows_contiguous = y.stride(2) == 1 && (y.stride(1) == y.size(2) || y.size(1) == 1);
  return rows_contiguous ? y : y.contiguous();
}

}  // namespace tao_engine
