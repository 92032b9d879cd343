// The top-p cutoff of one row without sorting its vocabulary: a search by mass over a range of values (lo, hi] known
// to hold the cutoff. Each pass places two pivots around the cutoff estimated from a strided sample, sums the mass
// above each in one vectorized pass, and keeps the one of the three sub-ranges that holds the cutoff; the range is
// compacted once it is under half of the values still scanned. The last few hundred values are sorted and scanned
// with the reference's rule. Compiled once per CPU capability: include only from sampling_kernels_impl.h.
#pragma once

#include <algorithm>
#include <cstdint>

#include "sampling_select.h"
#include "sampling_vec.h"

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kMassSample = 256;  // (value, weight) pairs sampled to place the pivots
constexpr int64_t kSortDirectly = 256;  // ranges this small are sorted outright

struct ValueWeight {
  float value;
  float weight;
};

// Of the pairs of (val, w) [n] whose value is <= hi: the fp64 mass and the count of those > t_hi and of those > t_lo.
struct RangeMasses {
  double mass_hi;
  double mass_lo;
  int64_t count_hi;
  int64_t count_lo;
};

inline RangeMasses masses_in_range(const float* val, const float* w, int64_t n, float t_hi, float t_lo, float hi) {
  const fVec thv(t_hi);
  const fVec tlv(t_lo);
  const fVec hiv(hi);
  const fVec zero(0.0f);
  F64Sum mass_hi;
  F64Sum mass_lo;
  int64_t count_hi = 0;
  int64_t count_lo = 0;
  for (int64_t i = 0; i < n; i += fVec::size()) {
    const bool full = i + fVec::size() <= n;
    const fVec v = full ? fVec::loadu(val + i) : load_tail(val + i, n - i, kNegInf);
    const fVec wv = full ? fVec::loadu(w + i) : load_tail(w + i, n - i, 0.0f);
    const fVec in_range = v <= hiv;
    const fVec above_hi = (v > thv) & in_range;
    const fVec above_lo = (v > tlv) & in_range;
    mass_hi.add(fVec::blendv(zero, wv, above_hi));
    mass_lo.add(fVec::blendv(zero, wv, above_lo));
    count_hi += __builtin_popcount(true_lanes(above_hi));
    count_lo += __builtin_popcount(true_lanes(above_lo));
  }
  return {mass_hi.total(), mass_lo.total(), count_hi, count_lo};
}

// Keeps, in order, the (val, w) pairs with lo < val <= hi, into out (which may alias the input: a pair is written at
// or before where it was read) and returns their count.
inline int64_t compact_range(
    const float* val, const float* w, int64_t n, float lo, float hi, float* out_val, float* out_w) {
  const fVec lov(lo);
  const fVec hiv(hi);
  int64_t count = 0;
  int64_t i = 0;
  for (; i + fVec::size() <= n; i += fVec::size()) {
    const fVec v = fVec::loadu(val + i);
    int hits = true_lanes((v > lov) & (v <= hiv));
    while (hits != 0) {
      const int64_t j = i + __builtin_ctz(hits);
      hits &= hits - 1;
      out_val[count] = val[j];
      out_w[count] = w[j];
      ++count;
    }
  }
  for (; i < n; ++i) {
    if (val[i] > lo && val[i] <= hi) {
      out_val[count] = val[i];
      out_w[count] = w[i];
      ++count;
    }
  }
  return count;
}

struct Pivots {
  bool found;
  float hi;
  float lo;  // <= hi
};

// Two values of the range (lo, hi] of (val, w) [n] placed around the cutoff: a strided sample of the range, sorted
// descending, each sampled weight standing for range_n / (sampled count) tokens, estimates the mass strictly above a
// sampled value as above + range_mass - (sampled mass at or below it); the cutoff goes where that first reaches the
// budget, the pivots a margin of sampled values either side. Not found: the sample missed the range.
inline Pivots mass_pivots(
    const float* val, const float* w, int64_t n, float lo, float hi, double above, double range_mass,
    int64_t range_n, double budget) {
  ValueWeight sample[kMassSample];
  const int64_t stride = std::max<int64_t>(1, n / kMassSample);
  int64_t count = 0;
  double sampled = 0.0;
  for (int64_t j = 0; j < kMassSample && j * stride < n; ++j) {
    const float v = val[j * stride];
    if (v > lo && v <= hi) {  // also leaves NaN out, which would break the sort's ordering
      sample[count++] = {v, w[j * stride]};
      sampled += w[j * stride];
    }
  }
  if (count == 0) {
    return {false, 0.0f, 0.0f};
  }
  std::sort(sample, sample + count, [](const ValueWeight& a, const ValueWeight& b) { return a.value > b.value; });
  const double scale = static_cast<double>(range_n) / static_cast<double>(count);
  double at_or_below = sampled;
  int64_t cut = count - 1;
  for (int64_t j = 0; j < count; ++j) {
    if (above + range_mass - at_or_below * scale >= budget) {
      cut = j;
      break;
    }
    at_or_below -= sample[j].weight;
  }
  const int64_t margin = 4 + cut / 4;
  int64_t lo_rank = std::min(cut + margin, count - 1);
  // The low pivot below the sample's top value where the sample has one, so that every pass drops some value.
  while (lo_rank + 1 < count && sample[lo_rank].value == sample[0].value) {
    ++lo_rank;
  }
  return {true, sample[std::max<int64_t>(cut - margin, 0)].value, sample[lo_rank].value};
}

// Buffers of one row's top-p search, each [V].
struct TopPScratch {
  float* weights;
  float* range_val;
  float* range_w;
  float* sorted;
};

struct TopPCutoff {
  float cutoff;
  double mass;  // of `in`: exp(value - row_max) in fp32, summed in fp64
};

// The top-p cutoff over `in` (the row's top-k-kept tokens, or all of them; row_max is the row's largest value): the
// smallest value whose mass strictly before it, in descending order, is < top_p times the mass of `in`.
inline TopPCutoff top_p_cutoff(TokenSet in, float row_max, float top_p, const TopPScratch& s) {
  if (in.n <= kSortDirectly) {
    // Sorted outright, the masses are the reference's own fp64 running sums in descending order.
    std::copy(in.val, in.val + in.n, s.sorted);
    std::sort(s.sorted, s.sorted + in.n, Descending());
    exp_weights(s.sorted, in.n, row_max, s.weights);
    double mass = 0.0;
    for (int64_t j = 0; j < in.n; ++j) {
      mass += s.weights[j];
    }
    return {nucleus_end(s.sorted, s.weights, in.n, 0.0, static_cast<double>(top_p) * mass), mass};
  }
  const double mass = exp_weights(in.val, in.n, row_max, s.weights);  // [n], aligned with in.val
  const double budget = static_cast<double>(top_p) * mass;
  // The cutoff is a value in (lo, hi]; `above` is the mass of the values above hi (all kept; always < budget). The
  // scanned arrays (val, w) [n] hold every value of the range, and others until the range is compacted. range_n may
  // count -inf and NaN values, which no range holds: it only steers the work, never the result.
  const float* val = in.val;
  const float* w = s.weights;
  int64_t n = in.n;
  float lo = kNegInf;
  float hi = kPosInf;
  double above = 0.0;
  double range_mass = mass;
  int64_t range_n = in.n;
  while (range_n > kSortDirectly) {
    const Pivots p = mass_pivots(val, w, n, lo, hi, above, range_mass, range_n, budget);
    if (!p.found) {
      break;
    }
    const RangeMasses m = masses_in_range(val, w, n, p.hi, p.lo, hi);
    float next_lo = lo;
    float next_hi = hi;
    double next_above = above;
    double next_mass = 0.0;
    int64_t next_n = 0;
    if (above + m.mass_hi >= budget) {  // the budget is spent above p.hi: p.hi and below are dropped
      next_lo = p.hi;
      next_mass = m.mass_hi;
      next_n = m.count_hi;
    } else if (above + m.mass_lo >= budget) {  // p.hi is kept, p.lo is not
      next_lo = p.lo;
      next_hi = p.hi;
      next_above = above + m.mass_hi;
      next_mass = m.mass_lo - m.mass_hi;
      next_n = m.count_lo - m.count_hi;
    } else {  // p.lo is kept too
      next_hi = p.lo;
      next_above = above + m.mass_lo;
      next_mass = range_mass - m.mass_lo;
      next_n = range_n - m.count_lo;
    }
    if (next_n == 0 || next_n == range_n) {
      break;  // fp64 rounding of a budget next to the whole mass, or a range of ties: sort the range as it is
    }
    lo = next_lo;
    hi = next_hi;
    above = next_above;
    range_mass = next_mass;
    range_n = next_n;
    if (2 * range_n <= n) {
      n = compact_range(val, w, n, lo, hi, s.range_val, s.range_w);
      val = s.range_val;
      w = s.range_w;
    }
  }
  const int64_t count = compact_range(val, w, n, lo, hi, s.sorted, s.range_w);
  std::sort(s.sorted, s.sorted + count, Descending());
  exp_weights(s.sorted, count, row_max, s.range_w);
  return {nucleus_end(s.sorted, s.range_w, count, above, budget), mass};
}

}  // namespace
}  // namespace tao_engine::cpu::CPU_CAPABILITY
