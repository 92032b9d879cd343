// CUDA host code of sample: argument checks (shared with CPU, csrc/sampling.h), output allocation, device
// guard and stream, then the launcher of sampling.cu. Compiled only in CUDA builds. Inference only: no autograd.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "../sampling.h"
#include "sampling_launch.h"

namespace tao_engine {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample_cuda(const at::Tensor& logits_in,
                                                          const at::Tensor& temperature_in,
                                                          const at::Tensor& top_k_in, const at::Tensor& top_p_in,
                                                          const at::Tensor& min_p_in, const at::Tensor& seeds_in,
                                                          const at::Tensor& steps_in) {
  check_sample_logits_shape(logits_in);
  TORCH_CHECK(logits_in.is_cuda(), kSampleOp, ": logits must be a CUDA tensor, got ", logits_in.device());
  TORCH_CHECK(logits_in.size(0) <= std::numeric_limits<int32_t>::max(), kSampleOp,
              ": at most 2^31 - 1 rows per call (one block per row), got ", logits_in.size(0));
  const FloatKind dtype = sample_logits_kind(logits_in);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const SampleInputs in =
      checked_sample_inputs(logits_in, temperature_in, top_k_in, top_p_in, min_p_in, seeds_in, steps_in);
  const at::Tensor& logits = in.logits;
  auto [tokens, logprobs, raw_logprobs] = empty_sample_outputs(logits);
  cuda::SampleArgs args{};
  args.logits = logits.const_data_ptr();
  args.row_stride = logits.stride(0);
  args.num_rows = logits.size(0);
  args.vocab = logits.size(1);
  args.dtype = dtype;
  args.temperature = in.temperature.const_data_ptr<float>();
  args.top_k = in.top_k.const_data_ptr<int64_t>();
  args.top_p = in.top_p.const_data_ptr<float>();
  args.min_p = in.min_p.const_data_ptr<float>();
  args.seeds = in.seeds.const_data_ptr<int64_t>();
  args.steps = in.steps.const_data_ptr<int64_t>();
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
