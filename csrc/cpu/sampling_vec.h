// Vectorized passes over one row for the sample kernels: load and scale, argmax, compaction by threshold, exp
// weights with fp64 sums, and the fp64 CDF inversion. Compiled once per CPU capability: include only
// from sampling_kernels_impl.h (CPU_CAPABILITY defined; see sampling_kernels.h).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "vec_common.h"  // fVec, iVec, kNegInf, nan_max, lanes_max, for_each_fvec
#include "vec_exp.h"  // vexp: within ~1 ulp of torch.exp, so kept sets and draws match the reference

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

constexpr float kPosInf = std::numeric_limits<float>::infinity();
constexpr int kAllLanes = (1 << fVec::size()) - 1;

// Bit i set where lane i of a comparison result is true (comparisons give all-ones lanes, a NaN pattern, or +0.0).
inline int true_lanes(const fVec& comparison) {
  return ~comparison.zero_mask() & kAllLanes;
}

// fp64 sum of fp32 lanes with independent partial sums, so long sums are not bound by the latency of one chain.
struct F64Sum {
#ifdef CPU_CAPABILITY_AVX2
  // Set in a user-written constructor: GCC compiles the implicit one without the file's AVX2 target.
  F64Sum() : low(_mm256_setzero_pd()), high(_mm256_setzero_pd()) {}
  __m256d low;
  __m256d high;
  void add(const fVec& w) {
    const __m256 v = w;
    low = _mm256_add_pd(low, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    high = _mm256_add_pd(high, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  double total() const {
    alignas(32) double lanes[4];
    _mm256_store_pd(lanes, _mm256_add_pd(low, high));
    return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  }
#else
  double lanes[fVec::size()] = {};
  void add(const fVec& w) {
    alignas(64) float values[fVec::size()];
    w.store(values);
    for (int i = 0; i < fVec::size(); ++i) {
      lanes[i] += values[i];
    }
  }
  double total() const {
    double sum = 0.0;
    for (double lane : lanes) {
      sum += lane;
    }
    return sum;
  }
#endif
};

// The last r < fVec::size() values at p, the other lanes `fill`.
inline fVec load_tail(const float* p, int64_t r, float fill) {
  return fVec::set(fVec(fill), fVec::loadu(p, r), r);
}

// Converts a row's n values to fp32, writes value / t to dst unless dst is null (the same IEEE division as the
// reference's logits / T), and returns the max of the unscaled values (NaN if any is NaN).
template <typename scalar_t>
float load_row(const scalar_t* src, int64_t n, float t, float* dst) {
  const fVec tv(t);
  fVec vmax(kNegInf);
  int64_t i = for_each_fvec(src, n, [&](int64_t j, const fVec& v) {
    vmax = at::vec::maximum(vmax, v);
    if (dst != nullptr) {
      (v / tv).store(dst + j);
    }
  });
  float row_max = lanes_max(vmax);
  for (; i < n; ++i) {
    const float x = static_cast<float>(src[i]);
    row_max = nan_max(row_max, x);
    if (dst != nullptr) {
      dst[i] = x / t;
    }
  }
  return row_max;
}

// The first position holding `target` (the row's max; a NaN max: the first NaN), as torch.argmax picks.
template <typename scalar_t>
int64_t first_index_of(const scalar_t* src, int64_t n, float target) {
  if (std::isnan(target)) {
    for (int64_t i = 0; i < n; ++i) {
      if (std::isnan(static_cast<float>(src[i]))) {
        return i;
      }
    }
    return 0;
  }
  int64_t i = 0;
  if constexpr (std::is_same_v<scalar_t, float>) {
    const fVec tv(target);
    for (; i + fVec::size() <= n; i += fVec::size()) {
      const int hits = true_lanes(fVec::loadu(src + i) == tv);
      if (hits != 0) {
        return i + __builtin_ctz(hits);
      }
    }
  }
  for (; i < n; ++i) {
    if (static_cast<float>(src[i]) == target) {
      return i;
    }
  }
  return 0;
}

// Writes, in order, the elements of (val, idx) [n] whose value is >= t to (out_val, out_idx) and returns their count.
// idx null: the ids are the positions. out may alias the input: an element is written at or before where it was read.
inline int64_t compress_ge(
    const float* val, const int32_t* idx, int64_t n, float t, float* out_val, int32_t* out_idx) {
  const fVec tv(t);
  int64_t count = 0;
  int64_t i = 0;
  for (; i + fVec::size() <= n; i += fVec::size()) {
    int hits = true_lanes(fVec::loadu(val + i) >= tv);
    while (hits != 0) {
      const int64_t j = i + __builtin_ctz(hits);
      hits &= hits - 1;
      out_val[count] = val[j];
      out_idx[count] = idx != nullptr ? idx[j] : static_cast<int32_t>(j);
      ++count;
    }
  }
  for (; i < n; ++i) {
    if (val[i] >= t) {
      out_val[count] = val[i];
      out_idx[count] = idx != nullptr ? idx[i] : static_cast<int32_t>(i);
      ++count;
    }
  }
  return count;
}

// out[j] = exp(val[j] - shift), the reference's fp32 weights; returns their sum in fp64 (partial sums: its order
// differs from a sequential cumsum only by fp64 rounding).
inline double exp_weights(const float* val, int64_t n, float shift, float* out) {
  const fVec s(shift);
  F64Sum sum;
  int64_t i = 0;
  for (; i + fVec::size() <= n; i += fVec::size()) {
    const fVec w = vexp(fVec::loadu(val + i) - s);
    w.store(out + i);
    sum.add(w);
  }
  if (i < n) {
    const fVec w = vexp(load_tail(val + i, n - i, kNegInf) - s);  // padding lanes give exp(-inf) = 0
    w.store(out + i, static_cast<int>(n - i));
    sum.add(w);
  }
  return sum.total();
}

constexpr int64_t kCdfBlock = 64;

struct CdfDraw {
  int64_t pos;
  double total;
};

// The reference's `_draw` on weights w [n] in vocabulary order, bit for bit: running fp64 sums in order, target =
// min(u * total, nextafter(total, 0)), the first position whose running sum exceeds it (the last when none does).
// The running sum is kept at the end of each block of kCdfBlock weights (block_sums [ceil(n / kCdfBlock)]); the
// search replays the one block that crosses the target from its start, with the same additions in the same order.
inline CdfDraw invert_cdf(const float* w, int64_t n, double u, double* block_sums) {
  double running = 0.0;
  const int64_t blocks = (n + kCdfBlock - 1) / kCdfBlock;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t end = std::min(n, (b + 1) * kCdfBlock);
    for (int64_t j = b * kCdfBlock; j < end; ++j) {
      running += static_cast<double>(w[j]);
    }
    block_sums[b] = running;
  }
  const double total = running;
  const double target = std::min(u * total, std::nextafter(total, 0.0));
  const int64_t b = std::upper_bound(block_sums, block_sums + blocks, target) - block_sums;
  if (b == blocks) {
    return {n - 1, total};
  }
  running = b > 0 ? block_sums[b - 1] : 0.0;
  const int64_t end = std::min(n, (b + 1) * kCdfBlock);
  for (int64_t j = b * kCdfBlock; j < end; ++j) {
    running += static_cast<double>(w[j]);
    if (running > target) {
      return {j, total};
    }
  }
  return {end - 1, total};  // unreachable: the block's last running sum is block_sums[b] > target
}

}  // namespace
}  // namespace tao_engine::cpu::CPU_CAPABILITY
