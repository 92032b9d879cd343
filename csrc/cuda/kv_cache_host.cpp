// CUDA host code of write_kv_cache: the reference's shape checks and messages, conversion of k/v to the cache dtype,
// device guard and stream, then the launcher of kv_cache.cu. Compiled only in CUDA builds. Slot values are asserted on
// the device (checking them here would need a device-to-host copy, a sync, per decode step).

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "kv_cache_launch.h"

namespace tao_engine {
namespace {

constexpr const char* kOp = "write_kv_cache";

void check_args(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_cache, const at::Tensor& v_cache,
                const at::Tensor& slot_mapping) {
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
    TORCH_CHECK(t->is_cuda() && t->device() == k_cache.device(), kOp,
                ": every tensor must be on the cache's CUDA device ", k_cache.device(), ", got one on ", t->device());
  }
  TORCH_CHECK(n <= std::numeric_limits<int32_t>::max(), kOp, ": at most 2^31 - 1 token rows per call, got ", n);
}

// k or v in the cache's dtype with each token row's Hkv * D values contiguous (a row-strided view is read in place).
at::Tensor as_cache_rows(const at::Tensor& x, const at::Tensor& cache) {
  at::Tensor y = x.to(cache.scalar_type());
  const bool rows_contiguous = y.stride(2) == 1 && (y.stride(1) == y.size(2) || y.size(1) == 1);
  return rows_contiguous ? y : y.contiguous();
}

void write_kv_cache_cuda(const at::Tensor& k_in, const at::Tensor& v_in, at::Tensor& k_cache, at::Tensor& v_cache,
                         const at::Tensor& slot_mapping_in) {
  check_args(k_in, v_in, k_cache, v_cache, slot_mapping_in);
  const c10::cuda::CUDAGuard guard(k_cache.device());
  const at::Tensor slot_mapping = slot_mapping_in.contiguous();
  const at::Tensor k = as_cache_rows(k_in, k_cache);
  const at::Tensor v = as_cache_rows(v_in, v_cache);
  cuda::KvWriteArgs args{};
  args.k = k.const_data_ptr();
  args.v = v.const_data_ptr();
  args.k_row_stride = k.stride(0) * k.element_size();
  args.v_row_stride = v.stride(0) * v.element_size();
  args.k_cache = k_cache.mutable_data_ptr();
  args.v_cache = v_cache.mutable_data_ptr();
  args.slots = slot_mapping.const_data_ptr<int64_t>();
  args.num_tokens = k.size(0);
  args.num_slots = k_cache.size(0) * k_cache.size(1);
  args.row_bytes = k_cache.size(2) * k_cache.size(3) * k_cache.element_size();
  cuda::launch_write_kv_cache(args, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CUDA, m) {
  m.impl("write_kv_cache", &write_kv_cache_cuda);
}

}  // namespace tao_engine
