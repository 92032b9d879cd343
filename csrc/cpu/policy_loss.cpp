// CPU kernel of policy_loss: the clipped policy-gradient loss with its variants (token or sequence ratio, dual clip,
// token weights, KL to a reference, four aggregations), its metrics and d loss / d logprobs, in one fused forward.
// One pass over each sequence (two for the sequence-level ratio) writes the per-token loss and the per-token
// gradient before aggregation, and returns the sequence's sums; the batch sums give the loss and each sequence's
// scale, which a last pass multiplies into the gradient. Autograd multiplies it by the incoming gradient
// (tao_engine/ops/_C_registrations.py). Formulas: tao_engine/ops/policy_loss.py; schema: csrc/ops.cpp. Shared with
// CUDA: the per-token math and types (csrc/policy_loss.h) and the argument checks (csrc/policy_loss_args.h).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../policy_loss.h"
#include "../policy_loss_args.h"

namespace tao_engine {
namespace {

constexpr const char* kOp = kPolicyLossOp;

// The CPU kernel's view of one call: the inputs through their strides and the mask in its own type.
template <typename MaskT>
struct PolicyLossInputs {
  StridedRows logprobs, old_logprobs, advantages, ref_logprobs, token_weights;
  const MaskT* mask;  // bool or float; a weight per token, 0 = not read
  int64_t mask_row_stride, mask_col_stride;
  int64_t batch, time;  // B, T

  float mask_at(int64_t b, int64_t t) const {
    return static_cast<float>(mask[b * mask_row_stride + t * mask_col_stride]);
  }
};

// Every input must live on the CPU.
void check_on_cpu(const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), kOp, ": ", name, " must be a CPU tensor, got ", t.device());
}

// One sequence: writes per_token[T] and (when grad is not null) the unscaled gradient grad[T].
template <typename MaskT>
SequenceSums sequence_forward(
    const PolicyLossInputs<MaskT>& in, const PolicyLossOptions& o, int64_t b, float* per_token, float* grad) {
  SequenceSums sums;
  float seq_ratio = 1.0f;  // GSPO's s_b
  if (o.ratio_level == RatioLevel::kSequence) {
    double weighted_delta = 0.0;
    double tokens = 0.0;
    for (int64_t t = 0; t < in.time; ++t) {
      const float m = in.mask_at(b, t);
      if (m == 0.0f) continue;
      weighted_delta += static_cast<double>(m * (in.logprobs.at(b, t) - in.old_logprobs.at(b, t)));
      tokens += m;
    }
    seq_ratio = static_cast<float>(std::exp(tokens > 0.0 ? weighted_delta / tokens : 0.0));
  }
  float ratio_max = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < in.time; ++t) {
    const float m = in.mask_at(b, t);
    if (m == 0.0f) {  // padding is never read: it may hold anything, even NaN
      per_token[t] = 0.0f;
      if (grad != nullptr) grad[t] = 0.0f;
      continue;
    }
    const float lp = in.logprobs.at(b, t);
    const float ratio =
        o.ratio_level == RatioLevel::kToken ? std::exp(lp - in.old_logprobs.at(b, t)) : seq_ratio;
    const float weight = in.token_weights.data != nullptr ? in.token_weights.at(b, t) : 1.0f;
    const float x_ref = o.has_ref ? in.ref_logprobs.at(b, t) - lp : 0.0f;
    const TokenTerms terms = token_terms(ratio, in.advantages.at(b, t), weight, x_ref, o);
    per_token[t] = m * terms.loss;
    if (grad != nullptr) grad[t] = m * terms.grad;
    sums.loss += per_token[t];
    sums.tokens += m;
    sums.clipped += terms.clipped ? m : 0.0f;
    sums.ratio += static_cast<double>(m * ratio);
    sums.kl += static_cast<double>(m * terms.kl);
    ratio_max = std::max(ratio_max, ratio);
  }
  sums.ratio_max = ratio_max;
  return sums;
}

// Each sequence's factor in the loss and its gradient (csrc/policy_loss.h).
std::vector<double> sequence_scales(const std::vector<SequenceSums>& sums, const PolicyLossOptions& o) {
  double total_tokens = 0.0;
  int64_t sequences = 0;
  for (const SequenceSums& s : sums) {
    total_tokens += s.tokens;
    sequences += s.tokens > 0.0 ? 1 : 0;
  }
  std::vector<double> scales(sums.size(), 0.0);
  for (size_t b = 0; b < sums.size(); ++b) {
    if (!(sums[b].tokens > 0.0)) continue;  // an empty sequence contributes 0
    scales[b] = sequence_scale(o, sums[b].tokens, total_tokens, static_cast<double>(sequences));
  }
  return scales;
}

template <typename MaskT>
void run(
    const PolicyLossInputs<MaskT>& in, const PolicyLossOptions& o, float* per_token, float* grad, float* loss,
    float* stats) {
  const int64_t batch = in.batch;
  const int64_t time = in.time;
  // Sequences per task: some tens of thousands of tokens, so that scheduling costs less than the work.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(time, 1));
  std::vector<SequenceSums> sums(static_cast<size_t>(batch));
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      sums[b] = sequence_forward(in, o, b, per_token + b * time, grad == nullptr ? nullptr : grad + b * time);
    }
  });
  const std::vector<double> scales = sequence_scales(sums, o);
  // Ordered serial sums: the result does not depend on the thread count.
  double loss_sum = 0.0, tokens = 0.0, clipped = 0.0, ratio = 0.0, kl = 0.0;
  float ratio_max = -std::numeric_limits<float>::infinity();
  for (int64_t b = 0; b < batch; ++b) {
    loss_sum += scales[b] * sums[b].loss;
    tokens += sums[b].tokens;
    clipped += sums[b].clipped;
    ratio += sums[b].ratio;
    kl += sums[b].kl;
    if (sums[b].tokens > 0.0) ratio_max = std::max(ratio_max, sums[b].ratio_max);
  }
  const bool any = tokens > 0.0;
  *loss = static_cast<float>(loss_sum);
  stats[0] = any ? static_cast<float>(clipped / tokens) : 0.0f;
  stats[1] = any ? static_cast<float>(ratio / tokens) : 0.0f;
  stats[2] = any ? ratio_max : 0.0f;
  stats[3] = any ? static_cast<float>(kl / tokens) : 0.0f;
  if (grad != nullptr) {
    at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const float scale = static_cast<float>(scales[b]);
        for (int64_t t = 0; t < time; ++t) grad[b * time + t] *= scale;
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> policy_loss_cpu(
    const at::Tensor& logprobs, const at::Tensor& old_logprobs, const at::Tensor& advantages, const at::Tensor& mask,
    const std::optional<at::Tensor>& ref_logprobs, const std::optional<at::Tensor>& token_weights, double clip_low,
    double clip_high, std::optional<double> dual_clip, c10::string_view ratio_level, c10::string_view kl_type,
    double kl_coef, c10::string_view loss_agg, std::optional<int64_t> max_tokens, bool compute_grad) {
  check_policy_loss_logprobs(logprobs);
  const int64_t batch = logprobs.size(0);
  const int64_t time = logprobs.size(1);
  const PolicyLossOptions o = parse_options(
      clip_low, clip_high, dual_clip, ratio_level, kl_type, kl_coef, loss_agg, max_tokens, ref_logprobs.has_value());
  check_mask(mask, batch, time, check_on_cpu);

  at::Tensor per_token = at::empty({batch, time}, logprobs.options().dtype(at::kFloat));
  // [B, T] d loss / d logprobs, or [0] when no gradient is wanted (eval, no_grad).
  at::Tensor grad = compute_grad ? at::empty({batch, time}, per_token.options()) : at::empty({0}, per_token.options());
  at::Tensor loss = at::zeros({}, per_token.options());
  at::Tensor stats = at::zeros({4}, per_token.options());

  auto launch = [&](auto mask_tag) {
    using MaskT = decltype(mask_tag);
    PolicyLossInputs<MaskT> in{};
    in.logprobs = rows_of("logprobs", logprobs, batch, time, false, check_on_cpu);
    in.old_logprobs = rows_of("old_logprobs", old_logprobs, batch, time, false, check_on_cpu);
    in.advantages = rows_of("advantages", advantages, batch, time, true, check_on_cpu);
    if (ref_logprobs.has_value()) {
      in.ref_logprobs = rows_of("ref_logprobs", *ref_logprobs, batch, time, false, check_on_cpu);
    }
    if (token_weights.has_value()) {
      in.token_weights = rows_of("token_weights", *token_weights, batch, time, false, check_on_cpu);
    }
    in.mask = mask.const_data_ptr<MaskT>();
    in.mask_row_stride = mask.stride(0);
    in.mask_col_stride = mask.stride(1);
    in.batch = batch;
    in.time = time;
    run(in, o, per_token.mutable_data_ptr<float>(), compute_grad ? grad.mutable_data_ptr<float>() : nullptr,
        loss.mutable_data_ptr<float>(), stats.mutable_data_ptr<float>());
  };
  if (mask.scalar_type() == at::kBool) {
    launch(bool{});
  } else {
    launch(float{});
  }
  return {loss, per_token, stats, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("policy_loss", &policy_loss_cpu);
}

}  // namespace tao_engine
