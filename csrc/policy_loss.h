// What the CPU and CUDA policy_loss kernels share (csrc/cpu/policy_loss.cpp, csrc/cuda/policy_loss.cu): the parsed
// options, the strided view of the [B, T] inputs, a sequence's sums, and the math of one token and of one sequence's
// scale, so both backends compute the same terms in the same order. The semantics (formulas, which algorithm uses
// which option) are specified in tao_engine/ops/policy_loss.py; the schema is in csrc/ops.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace tao_engine {

enum class RatioLevel { kToken, kSequence };
enum class KlType { kK1, kK2, kK3 };
enum class LossAgg { kTokenMean, kSeqMeanTokenMean, kSeqMeanTokenSum, kSeqMeanTokenSumNorm };

struct PolicyLossOptions {
  float clip_lower;  // 1 - clip_low
  float clip_upper;  // 1 + clip_high
  bool has_dual_clip;
  float dual_clip;  // c > 1, applied where A < 0
  RatioLevel ratio_level;
  bool has_ref;
  KlType kl_type;
  float kl_coef;
  LossAgg loss_agg;
  int64_t max_tokens;  // > 0 for kSeqMeanTokenSumNorm, else unused
};

// A [B, T] fp32 tensor read in place through its strides: advantages [B] are read with a time stride of 0, and
// column slices or transposes need no copy. `data == nullptr` marks an absent optional input.
struct StridedRows {
  const float* data = nullptr;
  int64_t row_stride = 0;
  int64_t col_stride = 0;

  TAO_HOST_DEVICE float at(int64_t b, int64_t t) const { return data[b * row_stride + t * col_stride]; }
};

// What one sequence contributes to the batch's sums (fp64, so that the batch total is independent of how the
// sequences are split across threads up to the last bit of a double).
struct SequenceSums {
  double loss = 0.0;  // sum_t l_t
  double tokens = 0.0;  // M_b = sum_t m_t
  double clipped = 0.0;  // sum_t m_t [clipping changed pg_t]
  double ratio = 0.0;  // sum_t m_t r_t
  double kl = 0.0;  // sum_t m_t kl_t
  float ratio_max = 0.0f;  // max of r_t over tokens with m_t != 0; meaningful only when tokens > 0
};

// Per-token loss and its derivative w.r.t. logprobs before aggregation, for one masked-in token.
struct TokenTerms {
  float loss;  // w * pg + kl_coef * kl (times the mask weight by the caller)
  float grad;
  float kl;
  bool clipped;
};

// The min each backend has always used: std::min on the CPU (b < a ? b : a, so a NaN a wins), fminf on the GPU (a
// number wins over a NaN). policy_clamp is min(max(x, lo), hi) with the same pairs.
TAO_HOST_DEVICE inline float policy_min(float a, float b) {
#ifdef __CUDA_ARCH__
  return fminf(a, b);
#else
  return std::min(a, b);
#endif
}

TAO_HOST_DEVICE inline float policy_clamp(float x, float lo, float hi) {
#ifdef __CUDA_ARCH__
  return fminf(fmaxf(x, lo), hi);
#else
  return std::min(std::max(x, lo), hi);
#endif
}

TAO_HOST_DEVICE inline TokenTerms token_terms(float ratio, float adv, float weight, float x_ref,
                                              const PolicyLossOptions& o) {
  const float unclipped = ratio * adv;
  const float clipped = policy_clamp(ratio, o.clip_lower, o.clip_upper) * adv;
  float pg = -policy_min(unclipped, clipped);
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
      const float e = expf(x_ref);
      kl = e - x_ref - 1.0f;
      dkl = 1.0f - e;
    }
  }
  return TokenTerms{pg + o.kl_coef * kl, dpg + o.kl_coef * dkl, kl, was_clipped};
}

// Sequence b's factor in the aggregated loss, for a sequence with tokens > 0 (an empty one contributes 0): loss =
// sum_b scale_b * (sum_t l_bt) for every aggregation, and the same scale_b multiplies sequence b's gradient.
TAO_HOST_DEVICE inline double sequence_scale(const PolicyLossOptions& o, double tokens, double total_tokens,
                                             double sequences) {
  double scale = 0.0;
  switch (o.loss_agg) {
    case LossAgg::kTokenMean:
      scale = 1.0 / total_tokens;
      break;
    case LossAgg::kSeqMeanTokenMean:
      scale = 1.0 / (tokens * sequences);
      break;
    case LossAgg::kSeqMeanTokenSum:
      scale = 1.0 / sequences;
      break;
    case LossAgg::kSeqMeanTokenSumNorm:
      scale = 1.0 / (static_cast<double>(o.max_tokens) * sequences);
      break;
  }
  return scale;
}

}  // namespace tao_engine
