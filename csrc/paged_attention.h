// Argument checks shared by the CPU and CUDA implementations of paged_decode_attention (csrc/cpu/paged_attention.cpp,
// csrc/cuda/paged_attention_host.cpp): the torch reference's checks and messages (ValueError), then what both
// kernels need beyond them. Schema: csrc/ops.cpp; specification: tao_engine/ops/paged_attention.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "float_kind_of.h"

namespace tao_engine {

constexpr const char* kPagedDecodeOp = "paged_decode_attention";

// check_device(t) runs on every tensor after the dtype checks, with the device's own message.
template <typename DeviceCheck>
void check_paged_decode_args(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                             const at::Tensor& block_tables, const at::Tensor& context_lens,
                             DeviceCheck&& check_device) {
  constexpr const char* kOp = kPagedDecodeOp;
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

  TORCH_CHECK(is_float_kind(k_cache.scalar_type()) && v_cache.scalar_type() == k_cache.scalar_type(), kOp,
              ": k_cache and v_cache must share one dtype among float32, bfloat16 and float16, got ",
              k_cache.scalar_type(), " and ", v_cache.scalar_type());
  TORCH_CHECK(is_float_kind(q.scalar_type()), kOp, ": q must be float32, bfloat16 or float16, got ",
              q.scalar_type());
  TORCH_CHECK(at::isIntegralType(context_lens.scalar_type(), /*includeBool=*/false), kOp,
              ": context_lens must be an integer tensor, got ", context_lens.scalar_type());
  for (const at::Tensor* t : {&q, &k_cache, &v_cache, &block_tables, &context_lens}) {
    check_device(*t);
  }
  TORCH_CHECK_VALUE(k_cache.is_contiguous() && v_cache.is_contiguous(), kOp,
                    ": k_cache and v_cache must be contiguous (allocate them with allocate_kv_caches)");
}

}  // namespace tao_engine
