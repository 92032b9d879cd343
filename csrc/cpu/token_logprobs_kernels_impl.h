// The token_logprobs row kernels, compiled once per CPU capability: include only from a
// token_logprobs_kernels_<capability>.cpp that defines CPU_CAPABILITY first (see token_logprobs_kernels.h).
//
// One streaming pass per row, no [N, V] temporary: the row is read in tiles of kTile values; a tile is converted to
// fp32, scaled by 1/T into a small stack buffer that stays in L1, and its max taken; if the running max grew, the
// running sum of exp is rescaled once for the whole tile; then exp(x - max) is summed from the buffer.
#pragma once

#include <algorithm>
#include <cmath>

#include "token_logprobs_kernels.h"
#include "vec_common.h"  // fVec, iVec, kNegInf, nan_max, lanes_max, lanes_sum, for_each_fvec
#include "vec_exp.h"

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

// Values per tile: 4 KiB of fp32 on the stack, re-read from L1 by the exp pass. A multiple of every vector width.
constexpr int64_t kTile = 1024;

inline int64_t round_up_to_vec(int64_t n) {
  return (n + fVec::size() - 1) / fVec::size() * fVec::size();
}

// Converts n <= kTile values of a row to fp32 scaled by inv_t into buf, pads buf with -inf up to a whole number of
// fp32 vectors (so later passes need no tail) and returns the values' max (NaN if any is NaN).
template <typename scalar_t>
float load_scaled_tile(const scalar_t* src, int64_t n, float inv_t, float* buf) {
  const fVec scale(inv_t);
  fVec vmax(kNegInf);
  int64_t i = for_each_fvec(src, n, [&](int64_t j, const fVec& raw) {
    const fVec v = raw * scale;
    v.store(buf + j);
    vmax = at::vec::maximum(vmax, v);
  });
  float tile_max = lanes_max(vmax);
  // The same fp32 multiply as the vector path, so the target's scaled logit compares exactly with the max.
  for (; i < n; ++i) {
    buf[i] = static_cast<float>(src[i]) * inv_t;
    tile_max = nan_max(tile_max, buf[i]);
  }
  for (; i < round_up_to_vec(n); ++i) {
    buf[i] = kNegInf;
  }
  return tile_max;
}

// Of one row's x = logits / T: the max, and the sum of exp(x - max) (both NaN when the row holds a NaN).
struct RowStats {
  float max;
  float sum_exp;
};

template <typename scalar_t>
RowStats row_stats(const scalar_t* row, int64_t vocab, float inv_t, float* buf) {
  float running_max = kNegInf;
  fVec sum(0.0f);  // per-lane partial sums of exp(x - running_max)
  for (int64_t start = 0; start < vocab; start += kTile) {
    const int64_t n = std::min(kTile, vocab - start);
    const float tile_max = load_scaled_tile(row + start, n, inv_t, buf);
    if (std::isnan(tile_max)) {
      return {tile_max, tile_max};
    }
    if (tile_max > running_max) {
      sum = sum * fVec(std::exp(running_max - tile_max));
      running_max = tile_max;
    }
    if (running_max == kNegInf) {
      continue;  // all values so far are -inf: they add nothing, and exp(-inf - -inf) would be NaN
    }
    const fVec shift(running_max);
    for (int64_t i = 0; i < round_up_to_vec(n); i += fVec::size()) {
      sum = sum + vexp(fVec::loadu(buf + i) - shift);
    }
  }
  return {running_max, lanes_sum(sum)};
}

template <typename scalar_t>
void forward_rows(const TokenLogprobsRows& rows, float* out, int64_t begin, int64_t end) {
  const auto* base = static_cast<const scalar_t*>(rows.logits);
  const float inv_t = rows.inv_temperature;
  alignas(64) float buf[kTile];
  for (int64_t i = begin; i < end; ++i) {
    const scalar_t* row = base + i * rows.row_stride;
    const RowStats stats = row_stats(row, rows.vocab, inv_t, buf);
    const float target_x = static_cast<float>(row[rows.targets[i]]) * inv_t;
    const float logp = (target_x - stats.max) - std::log(stats.sum_exp);
    // Mathematically logp <= 0 (target_x <= max, and sum_exp >= 1 since the max's own term is exp(0) = 1), but the
    // polynomial exp and fp32 rounding can land a hair above; a log-prob > 0 would be a probability > 1, which
    // ratios and KL terms downstream must never see. NaN passes through (NaN > 0 is false).
    out[i] = logp > 0.0f ? 0.0f : logp;
  }
}

// Converts n fp32 values to scalar_t into dst.
template <typename scalar_t>
void store_tile(const float* src, int64_t n, scalar_t* dst) {
  int64_t i = 0;
  if constexpr (std::is_same_v<scalar_t, float>) {
    for (; i + fVec::size() <= n; i += fVec::size()) {
      fVec::loadu(src + i).store(dst + i);
    }
  } else {
    using rVec = at::vec::Vectorized<scalar_t>;
    for (; i + rVec::size() <= n; i += rVec::size()) {
      const fVec a = fVec::loadu(src + i);
      const fVec b = fVec::loadu(src + i + fVec::size());
      at::vec::convert_from_float<scalar_t>(a, b).store(dst + i);
    }
  }
  for (; i < n; ++i) {
    dst[i] = static_cast<scalar_t>(src[i]);
  }
}

// Each row is read twice (statistics, then gradient); the second read mostly hits cache, the row having just been
// streamed.
template <typename scalar_t>
void backward_rows(const TokenLogprobsRows& rows, const float* grad_out, void* grad_logits, int64_t begin,
                   int64_t end) {
  const auto* base = static_cast<const scalar_t*>(rows.logits);
  auto* out_base = static_cast<scalar_t*>(grad_logits);
  const int64_t vocab = rows.vocab;
  const float inv_t = rows.inv_temperature;
  alignas(64) float buf[kTile];
  for (int64_t i = begin; i < end; ++i) {
    const scalar_t* row = base + i * rows.row_stride;
    scalar_t* out_row = out_base + i * vocab;
    const int64_t target = rows.targets[i];
    const RowStats stats = row_stats(row, vocab, inv_t, buf);
    const fVec lse(stats.max + std::log(stats.sum_exp));
    const float scale = grad_out[i] * inv_t;
    const fVec neg_scale(-scale);
    for (int64_t start = 0; start < vocab; start += kTile) {
      const int64_t n = std::min(kTile, vocab - start);
      load_scaled_tile(row + start, n, inv_t, buf);
      for (int64_t j = 0; j < round_up_to_vec(n); j += fVec::size()) {
        (neg_scale * vexp(fVec::loadu(buf + j) - lse)).store(buf + j);  // -g/T * softmax
      }
      if (target >= start && target < start + n) {
        buf[target - start] += scale;  // + g/T * onehot
      }
      store_tile(buf, n, out_row + start);
    }
  }
}

}  // namespace

void token_logprobs_rows(const TokenLogprobsRows& rows, float* out, int64_t begin, int64_t end) {
  with_float_kind(rows.dtype, [&](auto tag) { forward_rows<decltype(tag)>(rows, out, begin, end); });
}

void token_logprobs_backward_rows(
    const TokenLogprobsRows& rows, const float* grad_out, void* grad_logits, int64_t begin, int64_t end) {
  with_float_kind(rows.dtype, [&](auto tag) { backward_rows<decltype(tag)>(rows, grad_out, grad_logits, begin, end); });
}

}  // namespace tao_engine::cpu::CPU_CAPABILITY
