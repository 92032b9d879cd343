// CPU host code of linear_logprobs_frozen_weight: linear_logprobs' forward for a weight that needs no gradient (a
// frozen LM head, as under LoRA, where SmolLM2's head is the tied, frozen embedding) that also returns, per row, what
// the gradient in hidden needs, so the backward has neither a recomputation of the logits nor a GEMM:
//   E_p[W]     = sum_v p_v W_v                  [N, H] fp32   d logprob / d hidden = (W[target] - E_p[W]) / T
//   Cov_p(z, W) = sum_v p_v (z_v - E_p[z]) W_v   [N, H] fp32   d entropy / d hidden = -Cov_p(z, W) / T
// (with z = hidden @ W.T / T and p = softmax(z); d entropy / d z_v = -p_v (log p_v + H) = -p_v (z_v - E_p[z])).
// Per vocabulary block: one GEMM writes the logits, the row kernel folds them into the running statistics, rescales
// the rows' weight sums when the max grows and overwrites the block with e^(z - m) (and writes e^(z - m) (z - m)),
// and one GEMM (two with the entropy's gradient) adds block @ W_block to the sums. So 2 GEMMs in all for the
// log-prob's gradient, as the naive log_softmax(hidden @ W.T) has, against 3 for the recomputing path. The backward
// formula is in tao_engine/ops/_C_registrations.py; the schema in csrc/ops.cpp.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>

#include "linear_logprobs_host.h"
#include "linear_logprobs_kernels.h"

namespace tao_engine {
namespace {

using linear_logprobs::RunningTensors;

// (logprobs [N], entropy [N], lse [N], mean_weight [N, H], entropy_weight [N, H] or [0]), all fp32.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_logprobs_frozen_weight_cpu(
    const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets_in, double temperature,
    bool entropy_grad) {
  constexpr const char* op = "tao_engine::linear_logprobs_frozen_weight";
  linear_logprobs::check_cpu_args(op, hidden, weight, targets_in, temperature);
  const at::Tensor targets = targets_in.contiguous();
  const int64_t num_rows = hidden.size(0);
  const int64_t width = hidden.size(1);
  const int64_t vocab = weight.size(0);
  linear_logprobs::check_targets_in_range(op, targets, vocab);

  linear_logprobs::LogitsWalk walk(hidden, vocab, linear_logprobs::kCpuBlocks);
  RunningTensors running = RunningTensors::start(num_rows, walk.hidden32.options());
  const auto stats = running.raw<cpu::RunningStats>();
  linear_logprobs::WeightSums sums(walk, entropy_grad);
  cpu::ForwardWeightsBlockKernel* const kernel = TAO_CPU_KERNEL(linear_logprobs_forward_weights_block);
  const auto inv_t = static_cast<float>(1.0 / temperature);
  walk.for_each_block(weight, [&](at::Tensor& logits, const at::Tensor& w, int64_t row0, int64_t col0) {
    const int64_t rows = logits.size(0);
    at::Tensor shifted_probs = sums.shifted_probs(logits);
    const cpu::LogitsBlock block{
        logits.mutable_data_ptr<float>(), row0, col0, logits.size(1), targets.const_data_ptr<int64_t>(), inv_t};
    const cpu::WeightMoments moments{
        logits.mutable_data_ptr<float>(), entropy_grad ? shifted_probs.mutable_data_ptr<float>() : nullptr,
        sums.sum.mutable_data_ptr<float>(), entropy_grad ? sums.shifted_sum.mutable_data_ptr<float>() : nullptr,
        width};
    at::parallel_for(0, rows, linear_logprobs::row_grain(block.cols), [&](int64_t begin, int64_t end) {
      kernel(block, stats, moments, begin, end);
    });
    // `logits` now holds e^(z - m) and `shifted_probs` e^(z - m) (z - m), m each row's max after this block.
    sums.sum.narrow(0, row0, rows).addmm_(logits, w);
    if (entropy_grad) {
      sums.shifted_sum.narrow(0, row0, rows).addmm_(shifted_probs, w);
    }
  });
  return sums.finish(running);
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("linear_logprobs_frozen_weight", &linear_logprobs_frozen_weight_cpu);
}

}  // namespace tao_engine
