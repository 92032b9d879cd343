// CUDA host code of sample: argument checks (the CPU kernel's, csrc/cpu/sampling.cpp), output allocation, device
// guard and stream, then the launcher of sampling.cu. Compiled only in CUDA builds. Inference only: no autograd.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "sampling_launch.h"

namespace tao_engine {
namespace {

constexpr const char* kOp = "tao_engine::sample";

LogitsDtype logits_dtype(const at::Tensor& logits) {
  const auto dtype = logits.scalar_type();
  TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf, kOp,
                    ": logits must be float32, bfloat16 or float16, got ", dtype);
  if (dtype == at::kBFloat16) {
    return LogitsDtype::kBFloat16;
  }
  return dtype == at::kHalf ? LogitsDtype::kFloat16 : LogitsDtype::kFloat32;
}

// A per-row parameter: [B], of exactly `dtype` (the Python backend converts), on the logits' device.
at::Tensor checked_row_param(const at::Tensor& logits, const at::Tensor& param, const char* name,
                             at::ScalarType dtype) {
  TORCH_CHECK_VALUE(param.dim() == 1 && param.size(0) == logits.size(0), kOp, ": ", name, " must be [B] = [",
                    logits.size(0), "] (one value per logits row), got shape ", param.sizes());
  TORCH_CHECK_VALUE(param.scalar_type() == dtype, kOp, ": ", name, " must be ", dtype, ", got ", param.scalar_type());
  TORCH_CHECK_VALUE(param.device() == logits.device(), kOp, ": ", name, " is on ", param.device(),
                    " but logits are on ", logits.device());
  return param.contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample_cuda(const at::Tensor& logits_in,
                                                          const at::Tensor& temperature_in,
                                                          const at::Tensor& top_k_in, const at::Tensor& top_p_in,
                                                          const at::Tensor& min_p_in, const at::Tensor& seeds_in,
                                                          const at::Tensor& steps_in) {
  TORCH_CHECK_VALUE(logits_in.dim() == 2 && logits_in.size(1) >= 1, kOp,
                    ": logits must be a float [B, V] tensor with V >= 1, got ", logits_in.scalar_type(), " ",
                    logits_in.sizes());
  TORCH_CHECK(logits_in.is_cuda(), kOp, ": logits must be a CUDA tensor, got ", logits_in.device());
  TORCH_CHECK(logits_in.size(0) <= std::numeric_limits<int32_t>::max(), kOp,
              ": at most 2^31 - 1 rows per call (one block per row), got ", logits_in.size(0));
  const LogitsDtype dtype = logits_dtype(logits_in);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  // Rows may have any stride (a column slice is read in place); a strided last dim is copied.
  const at::Tensor logits = logits_in.stride(1) == 1 ? logits_in : logits_in.contiguous();
  const at::Tensor temperature = checked_row_param(logits, temperature_in, "temperature", at::kFloat);
  const at::Tensor top_k = checked_row_param(logits, top_k_in, "top_k", at::kLong);
  const at::Tensor top_p = checked_row_param(logits, top_p_in, "top_p", at::kFloat);
  const at::Tensor min_p = checked_row_param(logits, min_p_in, "min_p", at::kFloat);
  const at::Tensor seeds = checked_row_param(logits, seeds_in, "seeds", at::kLong);
  const at::Tensor steps = checked_row_param(logits, steps_in, "steps", at::kLong);

  const int64_t num_rows = logits.size(0);
  at::Tensor tokens = at::empty({num_rows}, logits.options().dtype(at::kLong));
  at::Tensor logprobs = at::empty({num_rows}, logits.options().dtype(at::kFloat));
  at::Tensor raw_logprobs = at::empty({num_rows}, logits.options().dtype(at::kFloat));
  cuda::SampleArgs args{};
  args.logits = logits.const_data_ptr();
  args.row_stride = logits.stride(0);
  args.num_rows = num_rows;
  args.vocab = logits.size(1);
  args.dtype = dtype;
  args.temperature = temperature.const_data_ptr<float>();
  args.top_k = top_k.const_data_ptr<int64_t>();
  args.top_p = top_p.const_data_ptr<float>();
  args.min_p = min_p.const_data_ptr<float>();
  args.seeds = seeds.const_data_ptr<int64_t>();
  args.steps = steps.const_data_ptr<int64_t>();
  args.tokens = tokens.mutable_data_ptr<int64_t>();
  args.logprobs = logprobs.mutable_data_ptr<float>();
  args.raw_logprobs = raw_logprobs.mutable_data_ptr<float>();
  cuda::launch_sample(args, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {tokens, logprobs, raw_logprobs};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CUDA, m) {
  m.impl("sample", &sample_cuda);
}

}  // namespace tao_engine
