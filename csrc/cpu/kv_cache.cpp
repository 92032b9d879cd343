// CPU write_kv_cache: k/v [N, Hkv, D] -> rows slot_mapping[i] of the caches viewed as [num_blocks * block_size, Hkv,
// D], in place, in the cache dtype; negative slots are skipped. One memcpy per token row and cache, rows split over
// threads when there are enough of them. Beside the reference's index_copy_ it needs no pass over slot_mapping to
// find skipped rows and no copy of k/v when they already have the cache's dtype. Checks shared with CUDA:
// csrc/kv_cache.h. Schema: csrc/ops.cpp.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "../kv_cache.h"

namespace tao_engine {
namespace {

constexpr const char* kOp = kWriteKvCacheOp;
// Bytes copied per task: below this, handing rows to another thread costs more than the copy.
constexpr int64_t kBytesPerTask = 64 * 1024;

// The shared checks (csrc/kv_cache.h) with this kernel's device.
void check_args(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_cache, const at::Tensor& v_cache,
                const at::Tensor& slot_mapping) {
  check_write_kv_cache_args(k, v, k_cache, v_cache, slot_mapping, [](const at::Tensor& t) {
    TORCH_CHECK(t.device().is_cpu(), kOp, ": every tensor must be on the CPU for this kernel, got one on ",
                t.device());
  });
}

void write_kv_cache_cpu(const at::Tensor& k_in, const at::Tensor& v_in, at::Tensor& k_cache, at::Tensor& v_cache,
                        const at::Tensor& slot_mapping_in) {
  check_args(k_in, v_in, k_cache, v_cache, slot_mapping_in);
  const int64_t n = k_in.size(0);
  if (n == 0) {
    return;
  }
  const at::Tensor slot_mapping = slot_mapping_in.contiguous();
  const int64_t* slots = slot_mapping.const_data_ptr<int64_t>();
  const int64_t num_slots = k_cache.size(0) * k_cache.size(1);
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK_INDEX(slots[i] < num_slots, kOp, ": slot_mapping[", i, "] = ", slots[i],
                      " is out of range for a cache of ", num_slots, " slots (num_blocks x block_size)");
  }
  const at::Tensor k = as_cache_rows(k_in, k_cache);
  const at::Tensor v = as_cache_rows(v_in, v_cache);
  const int64_t row_bytes = k_cache.size(2) * k_cache.size(3) * k_cache.element_size();
  const auto* k_src = static_cast<const char*>(k.const_data_ptr());
  const auto* v_src = static_cast<const char*>(v.const_data_ptr());
  const int64_t k_row_stride = k.stride(0) * k.element_size();
  const int64_t v_row_stride = v.stride(0) * v.element_size();
  auto* k_dst = static_cast<char*>(k_cache.mutable_data_ptr());
  auto* v_dst = static_cast<char*>(v_cache.mutable_data_ptr());
  at::parallel_for(0, n, std::max<int64_t>(1, kBytesPerTask / (2 * row_bytes)), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (slots[i] < 0) {
        continue;  // a skipped token (padding): its slot is left as it is
      }
      std::memcpy(k_dst + slots[i] * row_bytes, k_src + i * k_row_stride, row_bytes);
      std::memcpy(v_dst + slots[i] * row_bytes, v_src + i * v_row_stride, row_bytes);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("write_kv_cache", &write_kv_cache_cpu);
}

}  // namespace tao_engine
