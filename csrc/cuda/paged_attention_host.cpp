// CUDA host code of paged_decode_attention: the reference's shape checks and messages (shared with CPU,
// csrc/paged_attention.h), q in the cache dtype, device guard and stream, the launcher of paged_attention.cu, and the
// fp32 result cast to q's dtype. Compiled only in CUDA builds. Table entries and context lengths are asserted on the
// device: checking them here would cost a sync per decode step.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "../paged_attention.h"
#include "paged_attention_launch.h"

namespace tao_engine {
namespace {

constexpr const char* kOp = kPagedDecodeOp;

// The shared checks (csrc/paged_attention.h), then the bounds of this kernel's launch.
void check_args(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                const at::Tensor& block_tables, const at::Tensor& context_lens) {
  check_paged_decode_args(q, k_cache, v_cache, block_tables, context_lens, [&q](const at::Tensor& t) {
    TORCH_CHECK(t.is_cuda() && t.device() == q.device(), kOp, ": every tensor must be on q's CUDA device ",
                q.device(), ", got one on ", t.device());
  });
  const int64_t d = k_cache.size(3);
  TORCH_CHECK(d <= cuda::kMaxHeadDim, kOp, ": the CUDA kernel supports head dim D <= ", cuda::kMaxHeadDim, ", got ",
              d);
  TORCH_CHECK(block_tables.size(0) <= std::numeric_limits<int32_t>::max() && q.size(1) <= 65535, kOp,
              ": the CUDA grid bounds B < 2^31 and Hq <= 65535, got ", q.sizes());
}

at::Tensor paged_decode_attention_cuda(const at::Tensor& q_in, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                       const at::Tensor& block_tables_in, const at::Tensor& context_lens_in,
                                       double scale) {
  check_args(q_in, k_cache, v_cache, block_tables_in, context_lens_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  // The reference casts q to the cache dtype before the product; so does this, then works in fp32.
  const at::Tensor q = q_in.to(k_cache.scalar_type()).contiguous();
  const at::Tensor block_tables = block_tables_in.to(at::kLong).contiguous();
  const at::Tensor context_lens = context_lens_in.to(at::kLong).contiguous();
  at::Tensor out = at::empty(q.sizes(), q.options().dtype(at::kFloat));  // [B, Hq, D]
  cuda::PagedDecodeArgs args{};
  args.q = q.const_data_ptr();
  args.k_cache = k_cache.const_data_ptr();
  args.v_cache = v_cache.const_data_ptr();
  args.block_tables = block_tables.const_data_ptr<int64_t>();
  args.context_lens = context_lens.const_data_ptr<int64_t>();
  args.out = out.mutable_data_ptr<float>();
  args.batch = q.size(0);
  args.q_heads = q.size(1);
  args.kv_heads = k_cache.size(2);
  args.head_dim = k_cache.size(3);
  args.block_size = k_cache.size(1);
  args.max_blocks = block_tables.size(1);
  args.num_blocks = k_cache.size(0);
  args.scale = static_cast<float>(scale);
  args.dtype = float_kind_of(k_cache.scalar_type());
  cuda::launch_paged_decode_attention(args, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out.to(q_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CUDA, m) {
  m.impl("paged_decode_attention", &paged_decode_attention_cuda);
}

}  // namespace tao_engine
