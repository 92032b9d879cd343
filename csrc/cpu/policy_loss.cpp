// CPU kernel of policy_loss: the clipped policy-gradient loss with its variants (token or sequence ratio, dual clip,
// token weights, KL to a reference, four aggregations), its metrics and d loss / d logprobs, in one fused forward.
// One pass over each sequence (two for the sequence-level ratio) writes the per-token loss and the per-token
// gradient before aggregation, and returns the sequence's sums; the batch sums give the loss and each sequence's
// scale, which a last pass multiplies into the gradient. Autograd multiplies it by the incoming gradient
// (tao_engine/ops/_C_registrations.py). Formulas: tao_engine/ops/policy_loss.py; schema: csrc/ops.cpp.

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

#include "policy_loss.h"
#include "policy_loss_args.h"

namespace tao_engine {
namespace {

using cpu::KlType;
using cpu::LossAgg;
using cpu::PolicyLossInputs;
using cpu::PolicyLossOptions;
using cpu::RatioLevel;
using cpu::SequenceSums;
using cpu::StridedRows;
using cpu::parse_options;
using cpu::rows_of;

constexpr const char* kOp = cpu::kPolicyLossOp;

// Per-token loss and its derivative w.r.t. logprobs before aggregation, for one masked-in token.
struct TokenTerms {
  float loss;  // w * pg + kl_coef * kl (times the mask weight by the caller)
  float grad;
  float kl;
  bool clipped;
};

TokenTerms token_terms(float ratio, float adv, float weight, float x_ref, const PolicyLossOptions& o) {
  const float unclipped = ratio * adv;
  const float clipped = std::min(std::max(ratio, o.clip_lower), o.clip_upper) * adv;
  float pg = -std::min(unclipped, clipped);
  bool was_clipped = clipped < unclipped;
  // d pg / d logprobs. r's derivative is r itself (token ratio, or GSPO's token form). The clipped branch passes a
  // gradient only where the clamp is inactive, and torch.minimum splits a tie between both branches: the same rule
  // as autograd on the reference, so the backends agree even at r exactly on a bound.
  const float unclipped_share = unclipped < clipped ? 1.0f : (unclipped == clipped ? 0.5f : 0.0f);
  const bool in_range = ratio >= o.clip_lower && ratio <= o.clip_upper;
  float dpg = -adv * ratio * (unclipped_share + (in_range ? 1.0f - unclipped_share : 0.0f));
  if (o.has_dual_clip && adv < 0.0f) {
    const float cap = -o.dual_clip * adv;
    if (pg > cap) {
      pg = cap;
      dpg = 0.0f;
      was_clipped = true;
    }
  }
  pg *= weight;
  dpg *= weight;
  float kl = 0.0f;
  float dkl = 0.0f;
  if (o.has_ref) {  // x = ref - logprobs, so d x / d logprobs = -1
    if (o.kl_type == KlType::kK1) {
      kl = -x_ref;
      dkl = 1.0f;
    } else if (o.kl_type == KlType::kK2) {
      kl = 0.5f * x_ref * x_ref;
      dkl = -x_ref;
    } else {
      const float e = std::exp(x_ref);
      kl = e - x_ref - 1.0f;
      dkl = 1.0f - e;
    }
  }
  return TokenTerms{pg + o.kl_coef * kl, dpg + o.kl_coef * dkl, kl, was_clipped};
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

// Loss = sum_b scale_b * (sum_t l_bt) for every aggregation; the same scale_b multiplies sequence b's gradient.
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
    switch (o.loss_agg) {
      case LossAgg::kTokenMean:
        scales[b] = 1.0 / total_tokens;
        break;
      case LossAgg::kSeqMeanTokenMean:
        scales[b] = 1.0 / (sums[b].tokens * static_cast<double>(sequences));
        break;
      case LossAgg::kSeqMeanTokenSum:
        scales[b] = 1.0 / static_cast<double>(sequences);
        break;
      case LossAgg::kSeqMeanTokenSumNorm:
        scales[b] = 1.0 / (static_cast<double>(o.max_tokens) * static_cast<double>(sequences));
        break;
    }
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
  TORCH_CHECK_VALUE(logprobs.dim() == 2, kOp, ": logprobs must be a 2-D [B, T] tensor, got shape ", logprobs.sizes());
  const int64_t batch = logprobs.size(0);
  const int64_t time = logprobs.size(1);
  const PolicyLossOptions o = parse_options(
      clip_low, clip_high, dual_clip, ratio_level, kl_type, kl_coef, loss_agg, max_tokens, ref_logprobs.has_value());
  cpu::check_mask(mask, batch, time);

  at::Tensor per_token = at::empty({batch, time}, logprobs.options().dtype(at::kFloat));
  // [B, T] d loss / d logprobs, or [0] when no gradient is wanted (eval, no_grad).
  at::Tensor grad = compute_grad ? at::empty({batch, time}, per_token.options()) : at::empty({0}, per_token.options());
  at::Tensor loss = at::zeros({}, per_token.options());
  at::Tensor stats = at::zeros({4}, per_token.options());

  auto launch = [&](auto mask_tag) {
    using MaskT = decltype(mask_tag);
    PolicyLossInputs<MaskT> in{};
    in.logprobs = rows_of("logprobs", logprobs, batch, time, false);
    in.old_logprobs = rows_of("old_logprobs", old_logprobs, batch, time, false);
    in.advantages = rows_of("advantages", advantages, batch, time, true);
    if (ref_logprobs.has_value()) in.ref_logprobs = rows_of("ref_logprobs", *ref_logprobs, batch, time, false);
    if (token_weights.has_value()) in.token_weights = rows_of("token_weights", *token_weights, batch, time, false);
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
