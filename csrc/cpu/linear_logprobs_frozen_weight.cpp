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

using linear_logprobs_host::Blocking;

cpu::ForwardWeightsBlockFn forward_weights_kernel() {
#if TAO_CPU_AVX2_KERNELS
  if (cpu::use_avx2_kernels()) {
    return &cpu::AVX2::linear_logprobs_forward_weights_block;
  }
#endif
  return &cpu::DEFAULT::linear_logprobs_forward_weights_block;
}

// (logprobs [N], entropy [N], lse [N], mean_weight [N, H], entropy_weight [N, H] or [0]), all fp32.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_logprobs_frozen_weight_cpu(
    const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets_in, double temperature,
    bool entropy_grad) {
  constexpr const char* op = "tao_engine::linear_logprobs_frozen_weight";
  linear_logprobs_host::check_args(op, hidden, weight, targets_in, temperature);
  const at::Tensor targets = targets_in.contiguous();
  const int64_t num_rows = hidden.size(0);
  const int64_t width = hidden.size(1);
  const int64_t vocab = weight.size(0);
  linear_logprobs_host::check_targets_in_range(op, targets, vocab);

  const auto f32 = hidden.options().dtype(at::kFloat);
  const at::Tensor hidden32 = hidden.to(at::kFloat).contiguous();  // [N, H]; no copy for contiguous fp32
  at::Tensor run_max = at::full({num_rows}, -std::numeric_limits<float>::infinity(), f32);
  at::Tensor sum_exp = at::zeros({num_rows}, f32);
  at::Tensor sum_exp_shifted = at::zeros({num_rows}, f32);
  at::Tensor target_z = at::empty({num_rows}, f32);  // every target lies in exactly one block, which writes it
  const cpu::RunningStats stats{
      run_max.mutable_data_ptr<float>(), sum_exp.mutable_data_ptr<float>(),
      sum_exp_shifted.mutable_data_ptr<float>(), target_z.mutable_data_ptr<float>()};
  at::Tensor weight_sum = at::zeros({num_rows, width}, f32);  // [N, H]: sum e^(z - m) W_v
  at::Tensor shifted_weight_sum = entropy_grad ? at::zeros({num_rows, width}, f32) : at::Tensor();  // [N, H]

  const Blocking blocking = linear_logprobs_host::choose_blocking(num_rows, vocab);
  at::Tensor buffer = at::empty({blocking.rows * blocking.cols}, f32);
  at::Tensor shifted_buffer = entropy_grad ? at::empty({blocking.rows * blocking.cols}, f32) : at::Tensor();
  const cpu::ForwardWeightsBlockFn kernel = forward_weights_kernel();
  const auto inv_t = static_cast<float>(1.0 / temperature);
  for (int64_t col0 = 0; col0 < vocab && num_rows > 0; col0 += blocking.cols) {
    const int64_t cols = std::min(blocking.cols, vocab - col0);
    const at::Tensor w = linear_logprobs_host::weight_block(weight, col0, cols);  // [cols, H]
    for (int64_t row0 = 0; row0 < num_rows; row0 += blocking.rows) {
      const int64_t rows = std::min(blocking.rows, num_rows - row0);
      at::Tensor logits = linear_logprobs_host::block_logits(buffer, hidden32, w, row0, rows);  // [rows, cols]
      at::Tensor shifted_probs =
          entropy_grad ? shifted_buffer.narrow(0, 0, rows * cols).view({rows, cols}) : at::Tensor();
      const cpu::LogitsBlock block{
          logits.mutable_data_ptr<float>(), row0, col0, cols, targets.const_data_ptr<int64_t>(), inv_t};
      const cpu::WeightMoments moments{
          logits.mutable_data_ptr<float>(), entropy_grad ? shifted_probs.mutable_data_ptr<float>() : nullptr,
          weight_sum.mutable_data_ptr<float>(), entropy_grad ? shifted_weight_sum.mutable_data_ptr<float>() : nullptr,
          width};
      at::parallel_for(0, rows, linear_logprobs_host::row_grain(cols), [&](int64_t begin, int64_t end) {
        kernel(block, stats, moments, begin, end);
      });
      // `logits` now holds e^(z - m) and `shifted_probs` e^(z - m) (z - m), m each row's max after this block.
      weight_sum.narrow(0, row0, rows).addmm_(logits, w);
      if (entropy_grad) {
        shifted_weight_sum.narrow(0, row0, rows).addmm_(shifted_probs, w);
      }
    }
  }
  auto [logprobs, entropy, lse] =
      linear_logprobs_host::finish_forward(run_max, sum_exp, sum_exp_shifted, target_z);
  // E_p[W] = sum e^(z - m) W / S. Cov_p(z, W) = sum e^(z - m) (z - m) W / S - (U / S) E_p[W], as U / S = E_p[z] - m:
  // relative to the max, so no large numbers cancel.
  const at::Tensor inv_sum = sum_exp.reciprocal().unsqueeze(1);  // [N, 1]
  at::Tensor mean_weight = weight_sum.mul_(inv_sum);  // [N, H]
  at::Tensor entropy_weight = at::empty({0}, f32);
  if (entropy_grad) {
    const at::Tensor mean_shift = sum_exp_shifted.mul(inv_sum.squeeze(1)).neg_().unsqueeze(1);  // [N, 1]: -U / S
    entropy_weight = shifted_weight_sum.mul_(inv_sum).addcmul_(mean_weight, mean_shift);  // [N, H]
  }
  return {logprobs, entropy, lse, mean_weight, entropy_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("linear_logprobs_frozen_weight", &linear_logprobs_frozen_weight_cpu);
}

}  // namespace tao_engine
