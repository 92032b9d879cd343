// CPU host code of apply_rotary (rotate-half RoPE of q and k in one pass): argument checks, the choice of the per-ISA
// kernels (rotary_kernels.h) and the split of tokens over threads with at::parallel_for. The backward is the same op
// with transpose=True applied to the gradients. Schema: csrc/ops.cpp; specification: tao_engine/ops/rotary.py.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../float_kind_of.h"
#include "rotary_kernels.h"

namespace tao_engine {
namespace {

constexpr const char* kOp = "apply_rotary";
// Values one thread handles before another is worth waking: a decode step's 64 tokens x 12 heads x 64 stay on one.
constexpr int64_t kValuesPerTask = 65536;

// x [N, H, D] with unit stride along D (a copy otherwise), described for the kernels, and its contiguous output.
std::tuple<at::Tensor, cpu::RotaryHeads> heads_of(const at::Tensor& x_in, at::Tensor& out) {
  const at::Tensor x = x_in.stride(2) == 1 || x_in.size(2) <= 1 ? x_in : x_in.contiguous();
  out = at::empty(x.sizes(), x.options());
  return {x, cpu::RotaryHeads{x.const_data_ptr(), x.stride(0), x.stride(1), out.mutable_data_ptr(), x.size(1)}};
}

std::tuple<at::Tensor, at::Tensor> apply_rotary_cpu(const at::Tensor& q_in, const at::Tensor& k_in,
                                                    const at::Tensor& cos_in, const at::Tensor& sin_in,
                                                    bool transpose) {
  TORCH_CHECK_VALUE(q_in.dim() == 3 && k_in.dim() == 3 && q_in.size(0) == k_in.size(0) &&
                        q_in.size(2) == k_in.size(2),
                    kOp, ": q must be [N, Hq, D] and k [N, Hkv, D], got ", q_in.sizes(), " and ", k_in.sizes());
  const int64_t n = q_in.size(0);
  const int64_t d = q_in.size(2);
  TORCH_CHECK_VALUE(d % 2 == 0, kOp, ": head_dim must be even, got ", d);
  TORCH_CHECK_VALUE(cos_in.dim() == 2 && cos_in.size(0) == n && cos_in.size(1) == d && sin_in.sizes() == cos_in.sizes(),
                    kOp, ": cos and sin must be [N, D] = [", n, ", ", d, "], got ", cos_in.sizes(), " and ",
                    sin_in.sizes());
  TORCH_CHECK_VALUE(cos_in.scalar_type() == at::kFloat && sin_in.scalar_type() == at::kFloat, kOp,
                    ": cos and sin must be float32, got ", cos_in.scalar_type(), " and ", sin_in.scalar_type());
  TORCH_CHECK_VALUE(is_float_kind(q_in.scalar_type()) && k_in.scalar_type() == q_in.scalar_type(), kOp,
                    ": q and k must share one dtype of float32, bfloat16 or float16, got ", q_in.scalar_type(),
                    " and ", k_in.scalar_type());
  for (const at::Tensor* t : {&q_in, &k_in, &cos_in, &sin_in}) {
    TORCH_CHECK_VALUE(t->device().is_cpu(), kOp, ": tensors must be on the CPU");
  }
  // cos and sin share one row stride in the kernels: make both contiguous (a no-op for RotaryEmbedding's output).
  const at::Tensor cos = cos_in.contiguous();
  const at::Tensor sin = sin_in.contiguous();
  at::Tensor q_out, k_out;
  auto [q, q_heads] = heads_of(q_in, q_out);
  auto [k, k_heads] = heads_of(k_in, k_out);
  if (n == 0 || d == 0) {
    return {q_out, k_out};
  }
  const cpu::RotaryProblem p{q_heads, k_heads, float_kind_of(q.scalar_type()), cos.const_data_ptr<float>(),
                             sin.const_data_ptr<float>(), d, d, transpose};
  cpu::RotaryKernel* const kernel = TAO_CPU_KERNEL(rotary_tokens);
  const int64_t per_token = (q.size(1) + k.size(1)) * d;
  const int64_t grain = std::max<int64_t>(1, kValuesPerTask / std::max<int64_t>(per_token, 1));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { kernel(p, begin, end); });
  return {q_out, k_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("apply_rotary", &apply_rotary_cpu);
}

}  // namespace tao_engine
