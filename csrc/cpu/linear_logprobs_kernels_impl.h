// The linear_logprobs row kernels, compiled once per CPU capability: include only from a
// linear_logprobs_kernels_<capability>.cpp that defines CPU_CAPABILITY first (see linear_logprobs_kernels.h).
//
// A block row holds `cols` raw logits x of one batch row, just written by a GEMM and still in cache; z = x / T.
// Forward: one pass for the block max, one for sum exp(z - m) and sum exp(z - m) * (z - m), both relative to the
// running max m, so the entropy needs no difference of large numbers. When the max grows from m to m', earlier sums
// are rescaled: S' = S e^(m - m'), U' = e^(m - m') (U + S (m - m')) for U = sum e^(z - m) (z - m).
// The frozen-weight forward (fold_block_rows<true>) also overwrites the block with e^(z - m) relative to the new
// running max (and writes e^(z - m) (z - m)) and rescales the row's [H] weight sums as S and U are.
// Backward: with y = z - lse = log p, d loss / d z = g_lp (onehot - p) - g_ent p (y + H), and d/dx = (d/dz) / T.
// exp is ATen's exp_u20 (a degree-5 polynomial, ~1e-6 relative, exactly 1 at 0, 0 below ln(FLT_MIN)), the one ATen's
// own softmax kernels use: with Sleef's full-precision exp the forward's time beyond its GEMMs was ~1.5x larger here,
// for no visible accuracy gain in fp32 results. It does not propagate NaN, so NaN rows are handled before it runs.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>

#include "linear_logprobs_kernels.h"
#include "vec_common.h"  // fVec, kNegInf, nan_max, lanes_max, lanes_sum

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Max of n raw logits (NaN if any is NaN).
float raw_max(const float* x, int64_t n) {
  fVec vmax(kNegInf);
  int64_t j = 0;
  for (; j + fVec::size() <= n; j += fVec::size()) {
    vmax = at::vec::maximum(vmax, fVec::loadu(x + j));
  }
  float result = lanes_max(vmax);
  for (; j < n; ++j) {
    result = nan_max(result, x[j]);
  }
  return result;
}

// v <- c * v over n values.
inline void scale_values(float* v, int64_t n, float c) {
  at::vec::map([c](fVec x) { return x * fVec(c); }, v, v, n);
}

// Row i's weight sums when the running max grows by -shift (> 0), as S and U are rescaled:
// sum e^(z - m') (z - m') W = e^(m - m') (sum e^(z - m) (z - m) W + (m - m') sum e^(z - m) W), then the plain sum.
inline void rescale_weight_sums(const WeightMoments& moments, int64_t i, float shift, float rescale) {
  float* sum = moments.weight_sum + i * moments.width;  // [H]
  if (moments.shifted_weight_sum != nullptr) {
    float* shifted = moments.shifted_weight_sum + i * moments.width;  // [H]
    at::vec::map2(
        [shift, rescale](fVec u, fVec e) { return at::vec::fmadd(e, fVec(shift), u) * fVec(rescale); }, shifted,
        shifted, sum, moments.width);
  }
  scale_values(sum, moments.width, rescale);
}

// Folds block rows [begin, end) into the running statistics; with kWeights, also rescales the weight sums and
// writes the block's e^(z - m) (and e^(z - m) (z - m)) relative to the new max for the host's GEMMs. A NaN row
// writes NaN weights (its sums become NaN as its statistics do); a row that is all -inf so far writes zeros.
template <bool kWeights>
void fold_block_rows(
    const LogitsBlock& block, const RunningStats& stats, const WeightMoments& moments, int64_t begin, int64_t end) {
  const int64_t cols = block.cols;
  const float inv_t = block.inv_temperature;
  const fVec scale(inv_t);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t i = block.row0 + r;
    const float* x = block.logits + r * cols;
    float* probs = kWeights ? moments.probs + r * cols : nullptr;  // may alias x: each value is read, then written
    float* shifted_probs = kWeights && moments.shifted_probs != nullptr ? moments.shifted_probs + r * cols : nullptr;
    const int64_t target = block.targets[i];
    if (target >= block.col0 && target < block.col0 + cols) {
      stats.target_z[i] = x[target - block.col0] * inv_t;
    }
    float m = stats.max[i];
    // inv_t > 0 and rounding is monotonic, so max(x) * inv_t is exactly the max of the scaled values.
    const float new_m = nan_max(m, raw_max(x, cols) * inv_t);
    if (std::isnan(new_m) || new_m == kNegInf) {
      if (std::isnan(new_m)) {
        stats.max[i] = stats.sum_exp[i] = stats.sum_exp_shifted[i] = kNaN;
      }
      // All -inf so far: nothing to add, and (-inf) - (-inf) would be NaN.
      if constexpr (kWeights) {
        const float fill = std::isnan(new_m) ? kNaN : 0.0f;
        std::fill(probs, probs + cols, fill);
        if (shifted_probs != nullptr) {
          std::fill(shifted_probs, shifted_probs + cols, fill);
        }
      }
      continue;
    }
    float s = stats.sum_exp[i];
    float u = stats.sum_exp_shifted[i];
    if (new_m > m && m != kNegInf) {  // with m = -inf, s, u and the weight sums are still 0
      const float shift = m - new_m;  // < 0
      const float rescale = std::exp(shift);
      u = rescale * (u + s * shift);
      s = rescale * s;
      if constexpr (kWeights) {
        rescale_weight_sums(moments, i, shift, rescale);
      }
    }
    m = new_m;
    const fVec vm(m);
    fVec vs(0.0f);
    fVec vu(0.0f);
    int64_t j = 0;
    for (; j + fVec::size() <= cols; j += fVec::size()) {
      const fVec y = fVec::loadu(x + j) * scale - vm;  // z - m <= 0
      const fVec e = y.exp_u20();
      vs = vs + e;
      vu = at::vec::fmadd(e, y, vu);
      if constexpr (kWeights) {
        e.store(probs + j);
        if (shifted_probs != nullptr) {
          (e * y).store(shifted_probs + j);
        }
      }
    }
    s += lanes_sum(vs);
    u += lanes_sum(vu);
    for (; j < cols; ++j) {
      const float y = x[j] * inv_t - m;
      const float e = std::exp(y);
      s += e;
      u += e * y;
      if constexpr (kWeights) {
        probs[j] = e;
        if (shifted_probs != nullptr) {
          shifted_probs[j] = e * y;
        }
      }
    }
    stats.max[i] = m;
    stats.sum_exp[i] = s;
    stats.sum_exp_shifted[i] = u;
  }
}

}  // namespace

void linear_logprobs_forward_block(const LogitsBlock& block, const RunningStats& stats, int64_t begin, int64_t end) {
  fold_block_rows<false>(block, stats, WeightMoments{}, begin, end);
}

void linear_logprobs_forward_weights_block(
    const LogitsBlock& block, const RunningStats& stats, const WeightMoments& moments, int64_t begin, int64_t end) {
  fold_block_rows<true>(block, stats, moments, begin, end);
}

void linear_logprobs_backward_block(const LogitsBlock& block, const RowGradients& grads, int64_t begin, int64_t end) {
  const int64_t cols = block.cols;
  const float inv_t = block.inv_temperature;
  const fVec scale(inv_t);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t i = block.row0 + r;
    float* x = block.logits + r * cols;
    // 1/T folded into the upstream gradients once: d/dx = (d/dz) / T.
    const float a = grads.grad_logprobs[i] * inv_t;
    const float b = grads.grad_entropy[i] * inv_t;
    const float lse = grads.lse[i];
    const float entropy = grads.entropy[i];
    if (std::isnan(lse)) {  // a NaN logit made the forward NaN; exp_u20 would turn NaN into a large finite value
      std::fill(x, x + cols, kNaN);
      continue;
    }
    const fVec va(a);
    const fVec vb(b);
    const fVec vlse(lse);
    const fVec vent(entropy);
    int64_t j = 0;
    for (; j + fVec::size() <= cols; j += fVec::size()) {
      const fVec y = fVec::loadu(x + j) * scale - vlse;  // log p
      const fVec p = y.exp_u20();
      const fVec c = at::vec::fmadd(vb, y + vent, va);
      (fVec(0.0f) - p * c).store(x + j);  // -p (a + b (log p + H))
    }
    for (; j < cols; ++j) {
      const float y = x[j] * inv_t - lse;
      x[j] = -std::exp(y) * (a + b * (y + entropy));
    }
    const int64_t target = block.targets[i];
    if (target >= block.col0 && target < block.col0 + cols) {
      x[target - block.col0] += a;  // + a * onehot
    }
  }
}

}  // namespace tao_engine::cpu::CPU_CAPABILITY
