// Types of the CPU policy_loss kernel (csrc/cpu/policy_loss.cpp): its parsed options and the raw, strided view of
// its [B, T] inputs. The semantics (formulas, which algorithm uses which option) are specified in
// tao_engine/ops/policy_loss.py; the schema is in csrc/ops.cpp.
#pragma once

#include <cstdint>

namespace tao_engine::cpu {

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

  float at(int64_t b, int64_t t) const { return data[b * row_stride + t * col_stride]; }
};

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

}  // namespace tao_engine::cpu
