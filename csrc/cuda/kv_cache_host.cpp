// CUDA host code of write_kv_cache: the reference's shape checks and messages (shared with CPU, csrc/kv_cache.h),
// conversion of k/v to the cache dtype, device guard and stream, then the launcher of kv_cache.cu. Compiled only in
// CUDA builds. Slot values are asserted on the device (checking them here would need a device-to-host copy, a sync,
// per decode step).

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "../kv_cache.h"
#include "kv_cache_launch.h"

namespace tao_engine {
namespace {

constexpr const char* kOp = kWriteKvCacheOp;

// The shared checks (csrc/kv_cache.h) with this kernel's device, then the bound of its grid.
void check_args(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_cache, const at::Tensor& v_cache,
                const at::Tensor& slot_mapping) {
  check_write_kv_cache_args(k, v, k_cache, v_cache, slot_mapping, [&k_cache](const at::Tensor& t) {
    TORCH_CHECK(t.is_cuda() && t.device() == k_cache.device(), kOp,
                ": every tensor must be on the cache's CUDA device ", k_cache.device(), ", got one on ", t.device());
  });
  TORCH_CHECK(k.size(0) <= std::numeric_limits<int32_t>::max(), kOp, ": at most 2^31 - 1 token rows per call, got ",
              k.size(0));
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
