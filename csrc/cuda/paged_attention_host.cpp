// CUDA host code of paged_decode_attention: the reference's shape checks and messages, q in the cache dtype, device
// guard and stream, the launcher of paged_attention.cu, and the fp32 result cast to q's dtype. Compiled only in CUDA
// builds. Table entries and context lengths are asserted on the device: checking them here would cost a sync per
// decode step.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "paged_attention_launch.h"

namespace tao_engine {
namespace {

constexpr const char* kOp = "paged_decode_attention";

bool is_float_type(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

void check_args(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                const at::Tensor& block_tables, const at::Tensor& context_lens) {
  TORCH_CHECK_VALUE(k_cache.dim() == 4 && k_cache.sizes() == v_cache.sizes(), kOp,
                    ": k_cache and v_cache must both be [num_blocks, block_size, Hkv, D], got ", k_cache.sizes(),
                    " and ", v_cache.sizes());
  const int64_t hkv = k_cache.size(2);
  const int64_t d = k_cache.size(3);
  TORCH_CHECK_VALUE(hkv > 0 && d > 0 && k_cache.size(1) > 0, kOp,
                    ": k_cache must have block_size, Hkv and D > 0, got ", k_cache.sizes());
  TORCH_CHECK_VALUE(q.dim() == 3 && q.size(2) == d && q.size(1) % hkv == 0, kOp, ": q must be [B, Hq, ", d,
                    "] with Hq a multiple of Hkv=", hkv, ", got ", q.sizes());
  TORCH_CHECK_VALUE(
      block_tables.dim() == 2 && (block_tables.scalar_type() == at::kInt || block_tables.scalar_type() == at::kLong),
      kOp, ": block_tables must be int32 [B, max_blocks], got ", block_tables.scalar_type(), " ",
      block_tables.sizes());
  const int64_t batch = block_tables.size(0);
  TORCH_CHECK_VALUE(context_lens.dim() == 1 && context_lens.size(0) == batch, kOp, ": context_lens must be [B=",
                    batch, "] like block_tables' rows, got ", context_lens.sizes());
  TORCH_CHECK_VALUE(q.size(0) == batch, kOp, ": q has ", q.size(0), " rows but block_tables ", batch,
                    "; one query per sequence");
  TORCH_CHECK(is_float_type(k_cache.scalar_type()) && v_cache.scalar_type() == k_cache.scalar_type(), kOp,
              ": k_cache and v_cache must share one dtype among float32, bfloat16 and float16, got ",
              k_cache.scalar_type(), " and ", v_cache.scalar_type());
  TORCH_CHECK(is_float_type(q.scalar_type()), kOp, ": q must be float32, bfloat16 or float16, got ",
              q.scalar_type());
  TORCH_CHECK(at::isIntegralType(context_lens.scalar_type(), /*includeBool=*/false), kOp,
              ": context_lens must be an integer tensor, got ", context_lens.scalar_type());
  for (const at::Tensor* t : {&q, &k_cache, &v_cache, &block_tables, &context_lens}) {
    TORCH_CHECK(t->is_cuda() && t->device() == q.device(), kOp, ": every tensor must be on q's CUDA device ",
                q.device(), ", got one on ", t->device());
  }
  TORCH_CHECK_VALUE(k_cache.is_contiguous() && v_cache.is_contiguous(), kOp,
                    ": k_cache and v_cache must be contiguous (allocate them with allocate_kv_caches)");
  TORCH_CHECK(d <= cuda::kMaxHeadDim, kOp, ": the CUDA kernel supports head dim D <= ", cuda::kMaxHeadDim, ", got ",
              d);
  TORCH_CHECK(batch <= std::numeric_limits<int32_t>::max() && q.size(1) <= 65535, kOp,
              ": the CUDA grid bounds B < 2^31 and Hq <= 65535, got ", q.sizes());
}

cuda::CacheDtype cache_dtype_of(at::ScalarType t) {
  if (t == at::kBFloat16) {
    return cuda::CacheDtype::kBFloat16;
  }
  return t == at::kHalf ? cuda::CacheDtype::kFloat16 : cuda::CacheDtype::kFloat32;
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
  args.dtype = cache_dtype_of(k_cache.scalar_type());
  cuda::launch_paged_decode_attention(args, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out.to(q_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CUDA, m) {
  m.impl("paged_decode_attention", &paged_decode_attention_cuda);
}

}  // namespace tao_engine
