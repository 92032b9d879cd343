// Vector building blocks of the paged_decode_attention kernels (at::vec, fp32 arithmetic), compiled once per CPU
// capability: include only from paged_attention_kernels_impl.h, after CPU_CAPABILITY is defined. Everything lives in
// an anonymous namespace, so each per-ISA object keeps its own copy.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vec_common.h"  // fVec, kW, kNegInf, for_each_fvec, FloatBuffer

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

inline int64_t round_up(int64_t n, int64_t multiple) {
  return (n + multiple - 1) / multiple * multiple;
}

// Converts `rows` rows of d values (row r at src + r * stride) to fp32 rows of dp >= d values, zero padded, in dst.
template <typename scalar_t>
void rows_to_float(const scalar_t* src, int64_t stride, int64_t rows, int64_t d, int64_t dp, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* in = src + r * stride;
    float* out = dst + r * dp;
    int64_t i = for_each_fvec(in, d, [out](int64_t j, const fVec& v) { v.store(out + j); });
    for (; i < d; ++i) {
      out[i] = static_cast<float>(in[i]);
    }
    for (; i < dp; ++i) {
      out[i] = 0.0f;
    }
  }
}

// Asks for the cache lines of [base, base + bytes): the next block's K or V, scattered away from this one by the
// block table, where the hardware prefetcher cannot guess it.
inline void prefetch_range(const void* base, int64_t bytes) {
#if defined(__GNUC__)
  const char* p = static_cast<const char*>(base);
  for (int64_t offset = 0; offset < bytes; offset += 64) {
    __builtin_prefetch(p + offset, 0, 3);
  }
#else
  (void)base, (void)bytes;
#endif
}

// Lane i of the result = the sum of the lanes of s[i], for kW vectors s: kW dot products finished at once, for
// about the cost of two single horizontal sums.
inline fVec sum_each(const fVec* s) {
#if defined(CPU_CAPABILITY_AVX2)
  static_assert(kW == 8, "the AVX2 reduction tree is written for 8 fp32 lanes");
  // hadd pairs neighbouring lanes within each 128-bit half: after two rounds lane j of each half holds a partial
  // sum of s[j] (first four) or s[4 + j]; adding the two halves' partial sums completes every s[i].
  const __m256 t0 = _mm256_hadd_ps(s[0], s[1]);
  const __m256 t1 = _mm256_hadd_ps(s[2], s[3]);
  const __m256 t2 = _mm256_hadd_ps(s[4], s[5]);
  const __m256 t3 = _mm256_hadd_ps(s[6], s[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1);  // [s0..s3 low-half sums | s0..s3 high-half sums]
  const __m256 u1 = _mm256_hadd_ps(t2, t3);  // the same for s4..s7
  return fVec(_mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31)));
#else
  alignas(64) float lanes[kW];
  alignas(64) float sums[kW];
  for (int64_t i = 0; i < kW; ++i) {
    s[i].store(lanes);
    float total = 0.0f;
    for (int64_t j = 0; j < kW; ++j) {
      total += lanes[j];
    }
    sums[i] = total;
  }
  return fVec::loadu(sums);
#endif
}

// out[i] = q . k_i for kW rows k_i = k + i * k_stride of n vectors each; kN > 0 fixes n at compile time (the 64 and
// 128 head_dim fast paths). One accumulator per row: kW independent FMA chains, each q vector loaded once.
template <int64_t kN>
inline fVec dot_rows(const float* q, const float* k, int64_t k_stride, int64_t n_runtime) {
  const int64_t n = kN > 0 ? kN : n_runtime;
  fVec acc[kW];
  for (int64_t r = 0; r < kW; ++r) {
    acc[r] = fVec(0.0f);
  }
  for (int64_t i = 0; i < n; ++i) {
    const fVec qv = fVec::loadu(q + i * kW);
    for (int64_t r = 0; r < kW; ++r) {
      acc[r] = at::vec::fmadd(qv, fVec::loadu(k + r * k_stride + i * kW), acc[r]);
    }
  }
  return sum_each(acc);
}

// acc [kN vectors] += sum_t p[t] * v_t [kN vectors], v_t at v + t * v_stride; the accumulator stays in registers.
template <int kN>
inline void accumulate_rows(float* acc, const float* p, const float* v, int64_t v_stride, int64_t rows) {
  fVec a[kN];
  for (int i = 0; i < kN; ++i) {
    a[i] = fVec::loadu(acc + i * kW);
  }
  for (int64_t t = 0; t < rows; ++t) {
    const fVec pt(p[t]);
    const float* vt = v + t * v_stride;
    for (int i = 0; i < kN; ++i) {
      a[i] = at::vec::fmadd(pt, fVec::loadu(vt + i * kW), a[i]);
    }
  }
  for (int i = 0; i < kN; ++i) {
    a[i].store(acc + i * kW);
  }
}

// The same over a whole row of n vectors, in register-sized column chunks (8 accumulators + p + v fit 16 AVX2
// registers); with a compile-time n the chunk choice folds away.
inline void accumulate_row_span(float* acc, const float* p, const float* v, int64_t v_stride, int64_t rows,
                                int64_t n) {
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    accumulate_rows<8>(acc + c * kW, p, v + c * kW, v_stride, rows);
  }
  if (c + 4 <= n) {
    accumulate_rows<4>(acc + c * kW, p, v + c * kW, v_stride, rows);
    c += 4;
  }
  if (c + 2 <= n) {
    accumulate_rows<2>(acc + c * kW, p, v + c * kW, v_stride, rows);
    c += 2;
  }
  if (c < n) {
    accumulate_rows<1>(acc + c * kW, p, v + c * kW, v_stride, rows);
  }
}

// One head's online-softmax step over a tile of blocks: scores [n], n a multiple of kW (slots past each block's rows
// are -inf), become p = exp(s - m') in place, m and l are updated, and acc [dp] is rescaled when the max grew.
inline void softmax_step(float* scores, int64_t n, float& m, float& l, float* acc, int64_t dp) {
  fVec vmax(kNegInf);
  for (int64_t i = 0; i < n; i += kW) {
    vmax = at::vec::maximum(vmax, fVec::loadu(scores + i));  // propagates NaN, as the reference would
  }
  const float tile_max = at::vec::vec_reduce_all<float>([](fVec& x, fVec& y) { return at::vec::maximum(x, y); },
                                                         vmax);
  const float m_new = std::isnan(tile_max) ? tile_max : std::max(m, tile_max);
  if (m_new == kNegInf) {  // every score so far is -inf: nothing to add, and exp(-inf - -inf) would be NaN
    std::fill(scores, scores + n, 0.0f);
    return;
  }
  const fVec shift(m_new);
  fVec sum(0.0f);
  for (int64_t i = 0; i < n; i += kW) {
    const fVec p = (fVec::loadu(scores + i) - shift).exp_u20();  // -inf -> 0
    p.store(scores + i);
    sum = sum + p;
  }
  const float tile_sum = at::vec::vec_reduce_all<float>([](fVec& x, fVec& y) { return x + y; }, sum);
  if (m_new != m) {
    const float alpha = std::exp(m - m_new);  // 0 on the first block (m = -inf)
    const fVec valpha(alpha);
    for (int64_t i = 0; i < dp; i += kW) {
      (fVec::loadu(acc + i) * valpha).store(acc + i);
    }
    l *= alpha;
    m = m_new;
  }
  l += tile_sum;
}

}  // namespace
}  // namespace tao_engine::cpu::CPU_CAPABILITY
