// Host-side checks of policy_loss shared by the CPU and CUDA ops (csrc/cpu/policy_loss.cpp,
// csrc/cuda/policy_loss_host.cpp): the options parsed from the schema's arguments and each [B, T] input turned into a
// strided view, with errors that name the field (ValueError in Python, like the checks of
// tao_engine/ops/policy_loss_args.py). Each device adds its own check of where a tensor lives.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "policy_loss.h"

namespace tao_engine {

constexpr const char* kPolicyLossOp = "tao_engine::policy_loss";

inline void check_policy_loss_logprobs(const at::Tensor& logprobs) {
  TORCH_CHECK_VALUE(
      logprobs.dim() == 2, kPolicyLossOp, ": logprobs must be a 2-D [B, T] tensor, got shape ", logprobs.sizes());
}

// A float32 [B, T] input (or [B] where `per_sequence_ok`, read with a time stride of 0); check_device(name, t) last.
template <typename DeviceCheck>
StridedRows rows_of(const char* name, const at::Tensor& t, int64_t batch, int64_t time, bool per_sequence_ok,
                    DeviceCheck&& check_device) {
  constexpr const char* op = kPolicyLossOp;
  const bool per_sequence = per_sequence_ok && t.dim() == 1;
  const bool shape_ok = per_sequence ? t.size(0) == batch : (t.dim() == 2 && t.size(0) == batch && t.size(1) == time);
  TORCH_CHECK_VALUE(
      shape_ok, op, ": ", name, " must have shape ", per_sequence_ok ? "[B] or " : "", "[B, T] = [", batch, ", ",
      time, "], got ", t.sizes());
  TORCH_CHECK_VALUE(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ", t.scalar_type());
  check_device(name, t);
  return StridedRows{t.const_data_ptr<float>(), t.stride(0), per_sequence ? 0 : t.stride(1)};
}

// mask [B, T]: bool, or float32 weights; check_device("mask", mask) last.
template <typename DeviceCheck>
void check_mask(const at::Tensor& mask, int64_t batch, int64_t time, DeviceCheck&& check_device) {
  constexpr const char* op = kPolicyLossOp;
  TORCH_CHECK_VALUE(
      mask.dim() == 2 && mask.size(0) == batch && mask.size(1) == time, op, ": mask must have shape [B, T] = [",
      batch, ", ", time, "], got ", mask.sizes());
  TORCH_CHECK_VALUE(
      mask.scalar_type() == at::kBool || mask.scalar_type() == at::kFloat, op, ": mask must be bool or float32, got ",
      mask.scalar_type());
  check_device("mask", mask);
}

inline PolicyLossOptions parse_options(
    double clip_low, double clip_high, std::optional<double> dual_clip, c10::string_view ratio_level,
    c10::string_view kl_type, double kl_coef, c10::string_view loss_agg, std::optional<int64_t> max_tokens,
    bool has_ref) {
  constexpr const char* op = kPolicyLossOp;
  TORCH_CHECK_VALUE(
      std::isfinite(clip_low) && clip_low >= 0 && std::isfinite(clip_high) && clip_high >= 0, op,
      ": clip_low and clip_high must be finite numbers >= 0, got ", clip_low, " and ", clip_high);
  TORCH_CHECK_VALUE(
      !dual_clip.has_value() || (std::isfinite(*dual_clip) && *dual_clip > 1.0), op,
      ": dual_clip must be None or a finite number > 1, got ", dual_clip.value_or(0.0));
  TORCH_CHECK_VALUE(
      std::isfinite(kl_coef) && kl_coef >= 0, op, ": kl_coef must be a finite number >= 0, got ", kl_coef);
  TORCH_CHECK_VALUE(
      kl_coef == 0.0 || has_ref, op, ": kl_coef = ", kl_coef, " needs ref_logprobs; pass them or set kl_coef=0");
  PolicyLossOptions o{};
  o.clip_lower = static_cast<float>(1.0 - clip_low);
  o.clip_upper = static_cast<float>(1.0 + clip_high);
  o.has_dual_clip = dual_clip.has_value();
  o.dual_clip = static_cast<float>(dual_clip.value_or(0.0));
  o.has_ref = has_ref;
  o.kl_coef = static_cast<float>(kl_coef);
  o.max_tokens = max_tokens.value_or(0);

  if (ratio_level == "token") {
    o.ratio_level = RatioLevel::kToken;
  } else {
    TORCH_CHECK_VALUE(
        ratio_level == "sequence", op, ": ratio_level must be 'token' or 'sequence', got '",
        std::string(ratio_level), "'");
    o.ratio_level = RatioLevel::kSequence;
  }

  if (kl_type == "k1") {
    o.kl_type = KlType::kK1;
  } else if (kl_type == "k2") {
    o.kl_type = KlType::kK2;
  } else {
    TORCH_CHECK_VALUE(
        kl_type == "k3", op, ": kl_type must be 'k1', 'k2' or 'k3', got '", std::string(kl_type), "'");
    o.kl_type = KlType::kK3;
  }

  if (loss_agg == "token_mean") {
    o.loss_agg = LossAgg::kTokenMean;
  } else if (loss_agg == "seq_mean_token_mean") {
    o.loss_agg = LossAgg::kSeqMeanTokenMean;
  } else if (loss_agg == "seq_mean_token_sum") {
    o.loss_agg = LossAgg::kSeqMeanTokenSum;
  } else {
    TORCH_CHECK_VALUE(
        loss_agg == "seq_mean_token_sum_norm", op, ": loss_agg must be one of token_mean, seq_mean_token_mean, ",
        "seq_mean_token_sum, seq_mean_token_sum_norm; got '", std::string(loss_agg), "'");
    TORCH_CHECK_VALUE(
        o.max_tokens > 0, op, ": loss_agg='seq_mean_token_sum_norm' needs max_tokens > 0, got ",
        max_tokens.has_value() ? std::to_string(*max_tokens) : std::string("None"));
    o.loss_agg = LossAgg::kSeqMeanTokenSumNorm;
  }
  return o;
}

}  // namespace tao_engine
