// CPU host code of sample (tao_engine/ops/sampling.py is the specification): argument checks (shared with CUDA,
// csrc/sampling.h), choice of the per-ISA row kernels (sampling_kernels.h) and the split of rows across threads with
// at::parallel_for. Schema: csrc/ops.cpp. Inference only: no autograd.

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <string>
#include <tuple>

#include "../sampling.h"
#include "../token_logprobs_rows.h"
#include "sampling_kernels.h"

namespace tao_engine {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample_cpu(
    const at::Tensor& logits_in, const at::Tensor& temperature_in, const at::Tensor& top_k_in,
    const at::Tensor& top_p_in, const at::Tensor& min_p_in, const at::Tensor& seeds_in, const at::Tensor& steps_in) {
  check_sample_logits_shape(logits_in);
  const FloatKind dtype = sample_logits_kind(logits_in);
  TORCH_CHECK_VALUE(
      logits_in.size(1) <= std::numeric_limits<int32_t>::max(), kSampleOp, ": V = ", logits_in.size(1),
      " is too large (token ids are int32 inside the kernel)");
  const SampleInputs in =
      checked_sample_inputs(logits_in, temperature_in, top_k_in, top_p_in, min_p_in, seeds_in, steps_in);
  const at::Tensor& logits = in.logits;
  const int64_t num_rows = logits.size(0);
  auto [tokens, logprobs, raw_logprobs] = empty_sample_outputs(logits);
  const cpu::SampleOutputs out{
      .tokens = tokens.mutable_data_ptr<int64_t>(),
      .logprobs = logprobs.mutable_data_ptr<float>(),
      .raw_logprobs = raw_logprobs.mutable_data_ptr<float>(),
  };
  const TokenLogprobsRows raw_rows{
      .logits = logits.const_data_ptr(),
      .row_stride = logits.stride(0),
      .num_rows = num_rows,
      .vocab = logits.size(1),
      .dtype = dtype,
      .targets = out.tokens,  // a row's raw log-prob is computed right after its token is written
      .inv_temperature = 1.0f,
  };
  const cpu::SamplingRows rows{
      .logits = logits.const_data_ptr(),
      .row_stride = logits.stride(0),
      .vocab = logits.size(1),
      .dtype = dtype,
      .temperature = in.temperature.const_data_ptr<float>(),
      .top_k = in.top_k.const_data_ptr<int64_t>(),
      .top_p = in.top_p.const_data_ptr<float>(),
      .min_p = in.min_p.const_data_ptr<float>(),
      .seeds = in.seeds.const_data_ptr<int64_t>(),
      .steps = in.steps.const_data_ptr<int64_t>(),
      .raw = raw_rows,
  };
  cpu::SampleRowsKernel* const kernel = TAO_CPU_KERNEL(sample_rows);
  // One row is tens of microseconds of work at LLM vocabulary sizes: rows are the unit of parallel work.
  at::parallel_for(0, num_rows, 1, [&](int64_t begin, int64_t end) { kernel(rows, out, begin, end); });
  return {tokens, logprobs, raw_logprobs};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("sample", &sample_cpu);
}

}  // namespace tao_engine
