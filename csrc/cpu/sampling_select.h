// The top-k cutoff of one row without sorting its vocabulary: the row is narrowed to the values above a pivot taken
// from a strided sample, then the k-th is selected among those (nth_element). Also the top-p scan of sorted values
// that sampling_top_p.h ends with. Compiled once per CPU capability: include only from sampling_kernels_impl.h.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "sampling_vec.h"

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kPivotSample = 512;  // values sampled to place a top-k pivot

// Tokens of one row in vocabulary order: values (scaled logits) and ids; ids null: the ids are the positions.
struct TokenSet {
  const float* val;
  const int32_t* idx;
  int64_t n;
};

struct Descending {
  bool operator()(float a, float b) const {
    return a > b;
  }
};

// Writes to (out_val, out_idx), in order, the elements of `in` that are >= a pivot leaving at least `need` of them
// (every comparable one when the set is small or the pivot search gives up) and returns their count. The pivot is
// the value of a strided sample whose rank there stands for ~2 * need elements; a pivot that leaves too few is
// lowered, so the result never depends on the sample, only the time does.
inline int64_t narrow_to_top(TokenSet in, int64_t need, float* out_val, int32_t* out_idx) {
  if (in.n <= 4 * kPivotSample || need * 4 >= in.n) {
    return compress_ge(in.val, in.idx, in.n, kNegInf, out_val, out_idx);
  }
  float sample[kPivotSample];
  const int64_t stride = in.n / kPivotSample;
  for (int64_t j = 0; j < kPivotSample; ++j) {
    const float v = in.val[j * stride];
    sample[j] = std::isnan(v) ? kNegInf : v;  // NaN would break the ordering nth_element needs
  }
  int64_t rank = std::min(kPivotSample - 1, (2 * need * kPivotSample + in.n - 1) / in.n + 2);
  for (;;) {
    std::nth_element(sample, sample + rank, sample + kPivotSample, Descending());
    const float pivot = sample[rank];
    const int64_t count = compress_ge(in.val, in.idx, in.n, pivot, out_val, out_idx);
    if (count >= need || pivot == kNegInf) {
      return count;
    }
    if (rank == kPivotSample - 1) {
      return compress_ge(in.val, in.idx, in.n, kNegInf, out_val, out_idx);
    }
    rank = std::min(kPivotSample - 1, rank * 4 + 3);
  }
}

// The k-th largest value of `in` (1 <= k < in.n; -inf when fewer than k values compare, i.e. NaN), with the elements
// >= it, ties of the k-th included, written in order to (c_val, c_idx) and their count to *c_n. scratch: [in.n].
inline float top_k_cutoff(TokenSet in, int64_t k, float* c_val, int32_t* c_idx, int64_t* c_n, float* scratch) {
  const int64_t n = narrow_to_top(in, k, c_val, c_idx);
  if (n < k) {
    *c_n = n;
    return kNegInf;
  }
  std::copy(c_val, c_val + n, scratch);
  std::nth_element(scratch, scratch + (k - 1), scratch + n, Descending());
  const float kth = scratch[k - 1];
  *c_n = compress_ge(c_val, c_idx, n, kth, c_val, c_idx);
  return kth;
}

// Over values sorted descending with their weights, after tokens of mass `above`: the reference's keep rule (the
// running fp64 mass strictly before a token, inclusive - weight, is < budget) counted over the positions, and the
// value of the last kept one (the first when none is kept).
inline float nucleus_end(const float* sorted, const float* w, int64_t n, double above, double budget) {
  if (n == 0) {
    return kNegInf;  // an empty set (a row of NaN): keep whatever compares
  }
  double inclusive = above;
  int64_t count = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double weight = w[j];
    inclusive += weight;
    count += (inclusive - weight < budget) ? 1 : 0;
  }
  return sorted[std::max<int64_t>(count, 1) - 1];
}

}  // namespace
}  // namespace tao_engine::cpu::CPU_CAPABILITY
